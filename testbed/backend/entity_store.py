"""Storage of the SmartEM entities: acquisitions, grids, atlases, atlas tiles, grid squares, foil holes,
micrographs, and the placement of grid squares on atlas tiles.

Entities keep their request fields as JSON (wire form, ``None`` included) plus the bookkeeping the testbed's
read endpoints report: parent, owning acquisition, creation and update times, number of updates, "registered"
marks. Every create is one transaction: a batch with one bad row stores nothing.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from testbed.backend.db import Db, iso, utcnow
from testbed.backend.errors import DuplicateEntity, NotFound

KINDS: tuple[str, ...] = (
    "acquisition",
    "grid",
    "atlas",
    "atlas_tile",
    "gridsquare",
    "foilhole",
    "micrograph",
)
"""Entity kinds, parents before children."""

PARENT_KIND: dict[str, str | None] = {
    "acquisition": None,
    "grid": "acquisition",
    "atlas": "grid",
    "atlas_tile": "atlas",
    "gridsquare": "grid",
    "foilhole": "gridsquare",
    "micrograph": "foilhole",
}


@dataclass(frozen=True)
class NewEntity:
    """One row to create: its kind, uuid, parent uuid (None only for acquisitions) and wire fields."""

    kind: str
    uuid: str
    parent_uuid: str | None
    data: dict[str, Any]


def _entity_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "uuid": row["uuid"],
        "parent_uuid": row["parent_uuid"],
        "acquisition_uuid": row["acquisition_uuid"],
        "data": json.loads(row["data"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "update_count": row["update_count"],
        "registered": bool(row["registered"]),
        "registered_count": row["registered_count"],
    }


def _position_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "atlastile_uuid": row["tile_uuid"],
        "gridsquare_uuid": row["gridsquare_uuid"],
        "center_x": row["center_x"],
        "center_y": row["center_y"],
        "size_width": row["size_width"],
        "size_height": row["size_height"],
    }


class EntityStore:
    """Entity reads and writes over the backend's :class:`~testbed.backend.db.Db`."""

    def __init__(self, db: Db) -> None:
        self._db = db

    # -- writes ----------------------------------------------------------------------------------------------

    def create(self, entities: list[NewEntity]) -> list[dict[str, Any]]:
        """Create all ``entities`` in one transaction and return them as stored.

        Raises :class:`NotFound` when a parent is missing (a parent created in the same call counts, so an
        atlas and its tiles go together) and :class:`DuplicateEntity` when a uuid exists or repeats.
        """
        now = iso(utcnow())
        with self._db.tx() as conn:
            fresh: dict[tuple[str, str], str | None] = {}
            duplicates: list[str] = []
            for ent in entities:
                key = (ent.kind, ent.uuid)
                if key in fresh:
                    duplicates.append(ent.uuid)
                    continue
                parent_kind = PARENT_KIND[ent.kind]
                acquisition_uuid: str | None
                if parent_kind is None:
                    acquisition_uuid = ent.uuid
                elif ent.parent_uuid is not None and (parent_kind, ent.parent_uuid) in fresh:
                    acquisition_uuid = fresh[(parent_kind, ent.parent_uuid)]
                else:
                    parent = conn.execute(
                        "SELECT acquisition_uuid FROM entity WHERE kind = ? AND uuid = ?",
                        (parent_kind, ent.parent_uuid),
                    ).fetchone()
                    if parent is None:
                        raise NotFound(f"{parent_kind} {ent.parent_uuid} not found")
                    acquisition_uuid = parent["acquisition_uuid"]
                fresh[key] = acquisition_uuid
            if duplicates:
                raise DuplicateEntity(entities[0].kind, duplicates)
            by_kind: dict[str, list[str]] = {}
            for ent in entities:
                by_kind.setdefault(ent.kind, []).append(ent.uuid)
            for kind, uuids in by_kind.items():
                existing = self._existing(conn, kind, uuids)
                if existing:
                    raise DuplicateEntity(kind, existing)
            conn.executemany(
                "INSERT INTO entity (kind, uuid, parent_uuid, acquisition_uuid, data, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.kind, e.uuid, e.parent_uuid, fresh[(e.kind, e.uuid)], json.dumps(e.data), now, now)
                    for e in entities
                ],
            )
        return [
            {
                "kind": e.kind,
                "uuid": e.uuid,
                "parent_uuid": e.parent_uuid,
                "acquisition_uuid": fresh[(e.kind, e.uuid)],
                "data": e.data,
                "created_at": now,
                "updated_at": now,
                "update_count": 0,
                "registered": False,
                "registered_count": None,
            }
            for e in entities
        ]

    @staticmethod
    def _existing(conn: sqlite3.Connection, kind: str, uuids: list[str]) -> list[str]:
        found: list[str] = []
        # Chunked to stay below SQLite's bound-parameter limit on large batches.
        for start in range(0, len(uuids), 500):
            chunk = uuids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT uuid FROM entity WHERE kind = ? AND uuid IN ({marks})", (kind, *chunk)
            ).fetchall()
            found.extend(r["uuid"] for r in rows)
        return found

    def update(self, kind: str, uuid: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Merge ``fields`` into a stored entity (only the fields the client sent) and return it."""
        now = iso(utcnow())
        with self._db.tx() as conn:
            row = conn.execute("SELECT * FROM entity WHERE kind = ? AND uuid = ?", (kind, uuid)).fetchone()
            if row is None:
                raise NotFound(f"{kind} {uuid} not found")
            data = json.loads(row["data"])
            data.update(fields)
            conn.execute(
                "UPDATE entity SET data = ?, updated_at = ?, update_count = update_count + 1"
                " WHERE kind = ? AND uuid = ?",
                (json.dumps(data), now, kind, uuid),
            )
            updated = conn.execute(
                "SELECT * FROM entity WHERE kind = ? AND uuid = ?", (kind, uuid)
            ).fetchone()
        return _entity_dict(updated)

    def mark_registered(self, kind: str, uuid: str, count: int | None = None) -> None:
        """Record a ``…/registered`` call (grid: all squares registered; grid square: all holes, with
        count)."""
        with self._db.tx() as conn:
            cur = conn.execute(
                "UPDATE entity SET registered = 1, registered_count = ? WHERE kind = ? AND uuid = ?",
                (count, kind, uuid),
            )
            if cur.rowcount == 0:
                raise NotFound(f"{kind} {uuid} not found")

    def link_positions(
        self, tile_uuid: str, positions: list[dict[str, Any]], *, duplicates_conflict: bool
    ) -> list[dict[str, Any]]:
        """Place grid squares on an atlas tile (one transaction).

        A (tile, grid square) pair that is already linked is updated in place (a re-send after a restart is
        harmless) unless ``duplicates_conflict`` (SmartEM's behaviour: an integrity error). Referenced grid
        squares must exist.
        """
        now = iso(utcnow())
        with self._db.tx() as conn:
            tile = conn.execute(
                "SELECT acquisition_uuid FROM entity WHERE kind = 'atlas_tile' AND uuid = ?", (tile_uuid,)
            ).fetchone()
            if tile is None:
                raise NotFound(f"atlas_tile {tile_uuid} not found")
            seen: set[str] = set()
            for pos in positions:
                gs = pos.get("gridsquare_uuid")
                if gs is None:
                    continue
                if gs in seen:
                    raise DuplicateEntity("atlas_tile_position", [gs])
                seen.add(gs)
                if (
                    conn.execute(
                        "SELECT 1 FROM entity WHERE kind = 'gridsquare' AND uuid = ?", (gs,)
                    ).fetchone()
                    is None
                ):
                    raise NotFound(f"gridsquare {gs} not found")
            if duplicates_conflict and seen:
                linked = [
                    r["gridsquare_uuid"]
                    for r in conn.execute(
                        "SELECT gridsquare_uuid FROM tile_position WHERE tile_uuid = ?", (tile_uuid,)
                    ).fetchall()
                    if r["gridsquare_uuid"] in seen
                ]
                if linked:
                    raise DuplicateEntity("atlas_tile_position", linked)
            for pos in positions:
                values = (pos["center_x"], pos["center_y"], pos["size_width"], pos["size_height"], now)
                gs = pos.get("gridsquare_uuid")
                if (
                    gs is not None
                    and conn.execute(
                        "UPDATE tile_position SET center_x = ?, center_y = ?, size_width = ?, size_height"
                        " = ?,"
                        " updated_at = ? WHERE tile_uuid = ? AND gridsquare_uuid = ?",
                        (*values, tile_uuid, gs),
                    ).rowcount
                ):
                    continue
                conn.execute(
                    "INSERT INTO tile_position (tile_uuid, gridsquare_uuid, acquisition_uuid, center_x,"
                    " center_y,"
                    " size_width, size_height, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tile_uuid, gs, tile["acquisition_uuid"], *values[:4], now, now),
                )
        return [
            {
                "atlastile_uuid": tile_uuid,
                "gridsquare_uuid": p.get("gridsquare_uuid"),
                "center_x": p["center_x"],
                "center_y": p["center_y"],
                "size_width": p["size_width"],
                "size_height": p["size_height"],
            }
            for p in positions
        ]

    # -- reads -----------------------------------------------------------------------------------------------

    def get(self, kind: str, uuid: str) -> dict[str, Any] | None:
        """One entity with its bookkeeping, or ``None``."""
        with self._db.read() as conn:
            row = conn.execute("SELECT * FROM entity WHERE kind = ? AND uuid = ?", (kind, uuid)).fetchone()
        return None if row is None else _entity_dict(row)

    def children(self, kind: str, parent_uuid: str) -> list[dict[str, Any]]:
        """Entities of ``kind`` under ``parent_uuid``, in creation order."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM entity WHERE kind = ? AND parent_uuid = ? ORDER BY seq", (kind, parent_uuid)
            ).fetchall()
        return [_entity_dict(r) for r in rows]

    def all_of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every entity of ``kind``, in creation order."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM entity WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
        return [_entity_dict(r) for r in rows]

    def counts(self, acquisition_uuid: str | None = None) -> dict[str, int]:
        """Number of entities per kind (all kinds present, zeros included) plus ``atlas_tile_position``."""
        result = dict.fromkeys(KINDS, 0)
        where, args = ("WHERE acquisition_uuid = ?", (acquisition_uuid,)) if acquisition_uuid else ("", ())
        with self._db.read() as conn:
            for row in conn.execute(f"SELECT kind, COUNT(*) AS n FROM entity {where} GROUP BY kind", args):
                result[row["kind"]] = row["n"]
            pos = conn.execute(f"SELECT COUNT(*) AS n FROM tile_position {where}", args).fetchone()
        result["atlas_tile_position"] = pos["n"]
        return result

    def acquisition_tree(self, acquisition_uuid: str) -> dict[str, Any]:
        """Every entity of one acquisition grouped by kind, with field values, plus its tile positions."""
        with self._db.read() as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM entity WHERE kind = 'acquisition' AND uuid = ?", (acquisition_uuid,)
                ).fetchone()
                is None
            ):
                raise NotFound(f"acquisition {acquisition_uuid} not found")
            rows = conn.execute(
                "SELECT * FROM entity WHERE acquisition_uuid = ? ORDER BY seq", (acquisition_uuid,)
            ).fetchall()
            positions = conn.execute(
                "SELECT * FROM tile_position WHERE acquisition_uuid = ? ORDER BY seq", (acquisition_uuid,)
            ).fetchall()
        entities: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for row in rows:
            entities[row["kind"]].append(_entity_dict(row))
        return {
            "acquisition_uuid": acquisition_uuid,
            "entities": entities,
            "tile_positions": [_position_dict(p) for p in positions],
        }

    def tile_positions(self, tile_uuid: str) -> list[dict[str, Any]]:
        """Grid-square placements on one tile."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM tile_position WHERE tile_uuid = ? ORDER BY seq", (tile_uuid,)
            ).fetchall()
        return [_position_dict(r) for r in rows]


__all__ = ["KINDS", "PARENT_KIND", "EntityStore", "NewEntity"]
