"""The atlas join: linking an ``Atlas.dm`` to the sessions that name it, in either arrival order.

An ``Atlas.dm`` does not know its session, and usually lies outside the session folder (EPU keeps atlases in a
sibling tree); a session's ``EpuSession.dm`` names its atlas by a Windows path, which ``converters`` maps to a
local one (``AcquisitionData.atlas_local_path``). Both sides are keyed by the atlas file's normalised local path
(:func:`norm_path`):

* a parsed session yields a *claim* (:func:`session_claim`): acquisition key -> atlas path;
* a parsed atlas is kept, serialised, under its path (the ``ingest_atlas_files`` table), and a claim is kept in
  ``ingest_atlas_claims``; whichever comes second completes the join (:func:`join`, inside the commit's
  transaction) and yields the atlas's contributions for that acquisition (:func:`atlas_contributions`): the
  atlas with its tiles, the tile-to-square links, and the atlas-derived fields of each grid square;
* a claimed atlas that nobody has read (outside the watched folder) is returned for the pipeline to read.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from agent.ingest.entities import ContributionBuilder, contribution, provided, square_contribution
from agent.ingest.identity import EntityKind, entity_uuid
from agent.ingest.records import Contribution, Outcome
from converters.entity_converter import EntityConverter
from converters.parse import ParsedAtlas, ParsedSession
from converters.paths import EpuFileKind, EpuPath
from converters.requests import to_wire


def norm_path(path: str | os.PathLike[str]) -> str:
    """Canonical form of a local path, used to match an atlas file with the session that names it."""
    return os.path.normcase(str(Path(path).absolute()))


def session_claim(
    builder: ContributionBuilder, parsed: ParsedSession, info: EpuPath
) -> tuple[str, str] | None:
    """``(acquisition key, atlas path)`` of a session that names an atlas found locally, else ``None``."""
    if not parsed.grid.atlas_local_path:
        return None
    acq = builder.acq_key(parsed.acquisition.session_root or info.session_root)
    if acq is None:
        return None
    return acq, norm_path(parsed.grid.atlas_local_path)


def store_atlas(conn: sqlite3.Connection, path: str, data: str, now: float) -> list[str]:
    """Keep a parsed atlas (serialised) and return the acquisition keys whose session claims it."""
    conn.execute(
        "INSERT INTO ingest_atlas_files(path, data, updated_at) VALUES(?,?,?) "
        "ON CONFLICT(path) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
        (path, data, now),
    )
    rows = conn.execute("SELECT acquisition_key FROM ingest_atlas_claims WHERE atlas_path = ?", (path,))
    return [str(r[0]) for r in rows]


def claim_atlas(conn: sqlite3.Connection, acq_key: str, path: str) -> str | None:
    """Record that ``acq_key``'s session points to the atlas at ``path``; return the atlas if already parsed."""
    conn.execute(
        "INSERT INTO ingest_atlas_claims(acquisition_key, atlas_path) VALUES(?,?) "
        "ON CONFLICT(acquisition_key) DO UPDATE SET atlas_path=excluded.atlas_path",
        (acq_key, path),
    )
    row = conn.execute("SELECT data FROM ingest_atlas_files WHERE path = ?", (path,)).fetchone()
    return None if row is None else str(row[0])


def join(conn: sqlite3.Connection, outcome: Outcome, now: float) -> tuple[list[Contribution], list[str]]:
    """The atlas side of one file's commit (inside the caller's transaction).

    Returns the atlas contributions that the file completes (an atlas for every session that claimed it; a
    claiming session's atlas if already parsed) and the atlas files to read that nobody watches.
    """
    out: list[Contribution] = []
    fetch: list[str] = []
    if outcome.atlas is not None:
        key = norm_path(outcome.atlas.atlas.atlas_path or outcome.path)
        for acq in store_atlas(conn, key, outcome.atlas.model_dump_json(), now):
            out.extend(atlas_contributions(acq, outcome.atlas))
    if outcome.atlas_claim is not None:
        acq, atlas_path = outcome.atlas_claim
        blob = claim_atlas(conn, acq, atlas_path)
        if blob is not None:
            out.extend(atlas_contributions(acq, ParsedAtlas.model_validate_json(blob)))
        elif Path(atlas_path).is_file():
            fetch.append(atlas_path)
    return out, fetch


def atlas_contributions(acq: str, parsed: ParsedAtlas) -> list[Contribution]:
    """The atlas (tiles embedded), its tile-to-square links and atlas-derived square fields, for one session."""
    atlas = parsed.atlas
    source = EpuFileKind.ATLAS
    grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
    atlas_uuid = entity_uuid(acq, EntityKind.ATLAS, atlas.atlas_id)
    tiles = [
        tile.model_copy(
            update={"uuid": entity_uuid(acq, EntityKind.ATLAS_TILE, tile.tile_id), "atlas_uuid": atlas_uuid}
        )
        for tile in atlas.tiles
    ]
    data = atlas.model_copy(update={"uuid": atlas_uuid, "grid_uuid": grid_uuid, "tiles": tiles})
    out = [
        contribution(
            EntityKind.ATLAS,
            atlas_uuid,
            acq,
            atlas.atlas_id,
            grid_uuid,
            source,
            data.model_dump(mode="json", exclude_none=True),
        )
    ]
    out.extend(
        square_contribution(acq, sq, source, provided(EntityKind.GRIDSQUARE, source, sq))
        for sq in parsed.gridsquares
    )
    for tile in tiles:
        positions = [
            to_wire(
                EntityConverter.tile_position_to_request(
                    pos.model_copy(
                        update={"gridsquare_uuid": entity_uuid(acq, EntityKind.GRIDSQUARE, pos.gridsquare_id)}
                    )
                )
            )
            for pos in tile.gridsquare_positions
        ]
        if positions:
            out.append(
                contribution(
                    EntityKind.ATLAS_TILE,
                    str(tile.uuid),
                    acq,
                    tile.tile_id,
                    atlas_uuid,
                    source,
                    {"positions": positions},
                )
            )
    return out


__all__ = ["atlas_contributions", "claim_atlas", "join", "norm_path", "session_claim", "store_atlas"]
