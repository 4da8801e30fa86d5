"""Durable ingest state in the agent's SQLite database: files, entities, contributions, the outbox, spilled paths.

The model, in one paragraph. Each parsed file yields *contributions*: the request fields one source (the session
file, a grid-square ``.dm``, a foil-hole image, the atlas, ...) knows about one entity. An entity's payload is the
merge of its contributions in rank order, so a foil-hole image refines a hole without wiping the fields that came
from the grid-square ``.dm``. When the merged payload differs from what the backend last confirmed, the entity is
*dirty* and has one row in the outbox; the flusher reads the current payload when it sends, so any number of
rewrites of a file coalesce into one request. A row leaves the outbox only after the backend confirmed the payload
version it was sent with. An outbox row whose parent entity has not been seen yet is an *orphan*; it waits in the
database (surviving restarts) and becomes sendable as soon as the parent has been created on the backend. A
parent whose own file does not come within a bound is *synthesized* from what its children's paths say
(:meth:`IngestStore.synthesize_parents`): a contribution of the lowest rank under the parent's deterministic UUID,
so the parent's real file, if it appears later, completes the same entity by an update. ``synthesized`` in
``ingest_entities`` is 0 for an entity known from its own files, 1 for a synthesized one still waiting for them,
2 for a synthesized one that its own file has completed since.

The pipeline writes through :meth:`IngestStore.commit`, one unit of work per batch of processed files (file
records, the atlas join of :mod:`agent.ingest.atlas`, merged entities and their outbox rows, all or nothing); the
read-only queries are :class:`~agent.ingest.queries.StoreQueries`, and the kinds' send order comes from
:data:`agent.ingest.kinds.KINDS`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from agent.ingest import atlas
from agent.ingest.identity import EntityKind
from agent.ingest.kinds import KINDS
from agent.ingest.queries import StoreQueries, merged_fields
from agent.ingest.records import (
    NOT_SYNTHESIZED,
    SYNTHESIZED_COMPLETED,
    SYNTHESIZED_RANK,
    SYNTHESIZED_SOURCE,
    SYNTHESIZED_WAITING,
    ApplyResult,
    BuildParent,
    CommitResult,
    Contribution,
    FileRecord,
    OutboxItem,
    Outcome,
    Render,
)
from agent.state.database import Database

SCHEMA_COMPONENT = "ingest"
SCHEMA_VERSION = 2

#: Steps from one schema version to the next (see ``Database.ensure_schema``).
_MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE ingest_entities ADD COLUMN synthesized INTEGER NOT NULL DEFAULT 0",
}

_DDL = """
CREATE TABLE IF NOT EXISTS ingest_files (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_entities (
    uuid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    acquisition_key TEXT NOT NULL,
    natural_id TEXT NOT NULL,
    parent_uuid TEXT,
    payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    confirmed_hash TEXT,
    created INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    ready INTEGER NOT NULL DEFAULT 0,
    synthesized INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_entities_parent ON ingest_entities(parent_uuid);
CREATE INDEX IF NOT EXISTS ingest_entities_natural ON ingest_entities(acquisition_key, kind, natural_id);
CREATE TABLE IF NOT EXISTS ingest_contributions (
    uuid TEXT NOT NULL,
    source TEXT NOT NULL,
    rank INTEGER NOT NULL,
    order_key TEXT NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (uuid, source)
);
CREATE TABLE IF NOT EXISTS ingest_outbox (
    uuid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    version INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS ingest_outbox_order ON ingest_outbox(priority, enqueued_at);
CREATE TABLE IF NOT EXISTS ingest_atlas_files (
    path TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_atlas_claims (
    acquisition_key TEXT PRIMARY KEY,
    atlas_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_atlas_claims_path ON ingest_atlas_claims(atlas_path);
CREATE TABLE IF NOT EXISTS ingest_spill (
    path TEXT PRIMARY KEY,
    added_at REAL NOT NULL
)
"""


_RECORD_FILE_SQL = (
    "INSERT INTO ingest_files(path, kind, size, mtime_ns, content_hash, status, error, updated_at) "
    "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET kind=excluded.kind, size=excluded.size, "
    "mtime_ns=excluded.mtime_ns, content_hash=excluded.content_hash, status=excluded.status, "
    "error=excluded.error, updated_at=excluded.updated_at"
)

#: Most values bound in one ``IN (...)`` list (SQLite's default limit on bound parameters is 999 on old builds).
_IN_CHUNK = 500


def _chunked(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def payload_hash(payload: dict[str, Any]) -> str:
    """Stable hash of a JSON payload (key order independent)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class IngestStore(StoreQueries):
    """Typed access to the ingest tables; every write goes through one short transaction (a whole batch of files
    through :meth:`commit`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(SCHEMA_COMPONENT, SCHEMA_VERSION, _DDL, _MIGRATIONS)

    # ----------------------------------------------------------------- files

    def file_record(self, path: str) -> tuple[int, int, str, str] | None:
        """``(size, mtime_ns, content_hash, status)`` of the last processed version of ``path``, if any."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT size, mtime_ns, content_hash, status FROM ingest_files WHERE path = ?", (path,)
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), str(row[2]), str(row[3])

    def file_records(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str, str]]:
        """:meth:`file_record` for many paths at once."""
        out: dict[str, tuple[int, int, str, str]] = {}
        with self.db.read() as conn:
            for chunk in _chunked(paths, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT path, size, mtime_ns, content_hash, status FROM ingest_files WHERE path IN ({marks})",
                    chunk,
                ):
                    out[str(row[0])] = (int(row[1]), int(row[2]), str(row[3]), str(row[4]))
        return out

    @staticmethod
    def record_files(conn: sqlite3.Connection, records: Sequence[FileRecord], now: float) -> None:
        """:meth:`record_file` for many files in one statement (inside the caller's transaction)."""
        if records:
            conn.executemany(
                _RECORD_FILE_SQL,
                [
                    (r.path, r.kind, r.size, r.mtime_ns, r.content_hash, r.status, r.error, now)
                    for r in records
                ],
            )

    # ------------------------------------------------------------------ commit

    def commit(self, batch: Sequence[Outcome], render: Render, now: float) -> CommitResult:
        """Write the results of processing a batch of files as one unit of work: all of it or nothing.

        In one transaction: each file's processed version, the atlas join (:func:`agent.ingest.atlas.join`),
        and the merge of every contribution into its entity with the outbox rows of the entities whose payload
        changed. A crash or an error anywhere rolls all of it back, so no file is recorded as processed without
        its outbox rows, and the scan after a restart finds every file to redo. The contributions are merged in
        one pass in file order (the same result as applying the files one by one), which reads and writes each
        entity once per batch.
        """
        result = CommitResult()
        with self.db.transaction() as conn:
            self.record_files(conn, [o.record for o in batch if o.record is not None], now)
            contributions: list[Contribution] = []
            for outcome in batch:
                contributions.extend(outcome.contributions)
                joined, fetch = atlas.join(conn, outcome, now)
                contributions.extend(joined)
                result.fetch.extend(fetch)
            if contributions:
                applied = self.apply_contributions(conn, contributions, now, render)
                result.enqueued = applied.enqueued
                result.completed = applied.completed
        return result

    # ---------------------------------------------------------- contributions

    @staticmethod
    def apply_contributions(
        conn: sqlite3.Connection, contributions: Iterable[Contribution], now: float, render: Render
    ) -> ApplyResult:
        """Merge contributions into entities and enqueue every entity whose rendered payload changed.

        Runs inside the caller's transaction so that a file's record and its outbox rows commit together. The
        contributions are applied in order (a later one for the same entity and source replaces an earlier one
        unless its ``order_key`` is older), exactly as if applied one by one, but the database is read once per
        chunk of entities and written with ``executemany``: a backlog commit touches thousands of entities.
        """
        result = ApplyResult()
        contributions = list(contributions)
        if not contributions:
            return result
        uuids = list(dict.fromkeys(c.uuid for c in contributions))
        # Every stored source of every entity concerned: (rank, order_key, fields dict or JSON text).
        sources: dict[str, dict[str, tuple[int, str, dict[str, Any] | str]]] = {u: {} for u in uuids}
        entities: dict[str, tuple[str, str | None, int, int, int]] = {}
        for chunk in _chunked(uuids, _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            for uuid, source, rank, order_key, fields_text in conn.execute(
                f"SELECT uuid, source, rank, order_key, fields FROM ingest_contributions WHERE uuid IN ({marks})",
                chunk,
            ):
                sources[uuid][source] = (int(rank), str(order_key), str(fields_text))
            for uuid, p_hash, confirmed, skipped, ready, synthesized in conn.execute(
                "SELECT uuid, payload_hash, confirmed_hash, skipped, ready, synthesized FROM ingest_entities "
                f"WHERE uuid IN ({marks})",
                chunk,
            ):
                entities[uuid] = (str(p_hash), confirmed, int(skipped), int(ready), int(synthesized))
        meta: dict[str, Contribution] = {}
        primary: set[str] = set()
        real: dict[str, Contribution] = {}
        upserts: dict[tuple[str, str], tuple[str, str, int, str, str]] = {}
        for c in contributions:
            held = sources[c.uuid].get(c.source)
            if held is not None and held[1] > c.order_key:
                continue  # an older version of this source (e.g. the earlier of two foil-hole images)
            sources[c.uuid][c.source] = (c.rank, c.order_key, c.fields)
            upserts[(c.uuid, c.source)] = (
                c.uuid,
                c.source,
                c.rank,
                c.order_key,
                json.dumps(c.fields, sort_keys=True),
            )
            if c.primary:
                primary.add(c.uuid)
                if c.source != SYNTHESIZED_SOURCE:
                    real.setdefault(c.uuid, c)
            prev = meta.get(c.uuid)
            if prev is None or (c.parent_uuid is not None and prev.parent_uuid is None):
                meta[c.uuid] = c
        if upserts:
            conn.executemany(
                "INSERT INTO ingest_contributions(uuid, source, rank, order_key, fields) VALUES(?,?,?,?,?) "
                "ON CONFLICT(uuid, source) DO UPDATE SET rank=excluded.rank, "
                "order_key=excluded.order_key, fields=excluded.fields",
                list(upserts.values()),
            )
        completed = [
            (SYNTHESIZED_COMPLETED, now, uuid)
            for uuid in real
            if (row := entities.get(uuid)) is not None and row[4] == SYNTHESIZED_WAITING
        ]
        if completed:
            # The parent's own file came after it was built from its children's paths: the same entity (same
            # uuid), now completed; the changed payload below goes out as an update.
            conn.executemany("UPDATE ingest_entities SET synthesized=?, updated_at=? WHERE uuid=?", completed)
            result.completed.extend(real[uuid] for _, _, uuid in completed)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        enqueue: list[tuple[Any, ...]] = []
        unqueue: list[tuple[str]] = []
        for uuid, c in meta.items():
            merged: dict[str, Any] = {}
            # Rank order, then version, then source name: deterministic whatever order the rows were stored in.
            for _source, (_rank, _order, fields) in sorted(
                sources[uuid].items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0])
            ):
                merged.update(json.loads(fields) if isinstance(fields, str) else fields)
            payload, skip = render(c.kind, merged)
            # One serialisation serves as the stored text and as the input of the hash (see payload_hash).
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
            new_hash = hashlib.sha256(text.encode()).hexdigest()
            row = entities.get(uuid)
            ready = uuid in primary or (row is not None and bool(row[3]))
            if row is None:
                inserts.append(
                    (
                        uuid,
                        c.kind.value,
                        c.acq_key,
                        c.natural_id,
                        c.parent_uuid,
                        text,
                        new_hash,
                        int(skip),
                        int(ready),
                        now,
                        now,
                    )
                )
                confirmed = None
            else:
                if row[0] == new_hash and bool(row[2]) == skip and bool(row[3]) == ready:
                    result.unchanged += 1
                    continue
                updates.append((text, new_hash, int(skip), int(ready), c.parent_uuid, now, uuid))
                confirmed = row[1]
            result.touched.add(uuid)
            if skip or not ready or confirmed == new_hash:
                if skip and row is not None:
                    unqueue.append((uuid,))
                continue
            enqueue.append((uuid, c.kind.value, KINDS[c.kind].send_order, now))
            result.enqueued += 1
        if inserts:
            conn.executemany(
                "INSERT INTO ingest_entities(uuid, kind, acquisition_key, natural_id, parent_uuid, "
                "payload, payload_hash, skipped, ready, first_seen, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                inserts,
            )
        if updates:
            conn.executemany(
                "UPDATE ingest_entities SET payload=?, payload_hash=?, skipped=?, ready=?, "
                "parent_uuid=COALESCE(parent_uuid, ?), updated_at=? WHERE uuid=?",
                updates,
            )
        if unqueue:
            conn.executemany("DELETE FROM ingest_outbox WHERE uuid = ?", unqueue)
        if enqueue:
            conn.executemany(
                "INSERT INTO ingest_outbox(uuid, kind, priority, version, enqueued_at) VALUES(?,?,?,1,?) "
                "ON CONFLICT(uuid) DO UPDATE SET version = version + 1, attempts = 0, next_attempt_at = 0",
                enqueue,
            )
        return result

    # ------------------------------------------------------- synthesized parents

    def synthesize_parents(
        self, cutoff: float, build: BuildParent, render: Render, now: float
    ) -> list[Contribution]:
        """Build the missing parents of every orphan first seen at or before ``cutoff``; returns what was built.

        An orphan here is an unsent child (in the outbox, neither skipped nor secondary-only) whose parent has no
        primary source yet. ``build`` makes the parent's contribution from the child's fields (a foil hole from
        a micrograph's ``FoilHole_<id>`` and ``GridSquare_<id>``, a grid square from its holes, the grid and the
        acquisition from the session folder). A built parent may itself be an orphan, so this repeats up the
        chain in the same transaction. Each built entity is marked ``synthesized`` and enqueued like any other.
        """
        made: list[Contribution] = []
        tried: set[str] = set()
        with self.db.transaction() as conn:
            for _ in range(len(EntityKind)):
                rows = conn.execute(
                    "SELECT e.uuid, e.kind, e.acquisition_key, e.parent_uuid FROM ingest_outbox o "
                    "JOIN ingest_entities e ON e.uuid = o.uuid "
                    "LEFT JOIN ingest_entities p ON p.uuid = e.parent_uuid "
                    "WHERE e.parent_uuid IS NOT NULL AND e.ready = 1 AND e.skipped = 0 "
                    "AND (p.uuid IS NULL OR p.ready = 0) AND (e.first_seen <= ? OR e.synthesized = ?) "
                    "ORDER BY o.priority DESC, e.first_seen",
                    (cutoff, SYNTHESIZED_WAITING),
                ).fetchall()
                built: dict[str, Contribution] = {}
                for child_uuid, child_kind, acq, parent_uuid in rows:
                    if parent_uuid in built or child_uuid in tried:
                        continue
                    tried.add(str(child_uuid))
                    fields = merged_fields(conn, str(child_uuid))
                    contribution = build(EntityKind(child_kind), str(acq), fields)
                    # A child that cannot place its parent leaves it to a sibling that can.
                    if contribution is not None and contribution.uuid == parent_uuid:
                        built[contribution.uuid] = contribution
                if not built:
                    break
                IngestStore.apply_contributions(conn, built.values(), now, render)
                conn.executemany(
                    "UPDATE ingest_entities SET synthesized = ? WHERE uuid = ? AND synthesized = ?",
                    [(SYNTHESIZED_WAITING, uuid, NOT_SYNTHESIZED) for uuid in built],
                )
                made.extend(built.values())
        return made

    # ----------------------------------------------------------------- outbox

    def sendable(self, limit: int, now: float) -> list[OutboxItem]:
        """Outbox rows due now whose parent the backend has confirmed, parents' kinds first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT o.uuid, o.kind, o.version, e.payload, e.payload_hash, e.created, e.parent_uuid, o.attempts "
                "FROM ingest_outbox o JOIN ingest_entities e ON e.uuid = o.uuid "
                "LEFT JOIN ingest_entities p ON p.uuid = e.parent_uuid "
                "WHERE o.next_attempt_at <= ? AND (e.parent_uuid IS NULL OR p.created = 1) "
                "ORDER BY o.priority, o.enqueued_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            OutboxItem(
                uuid=str(r[0]),
                kind=EntityKind(r[1]),
                version=int(r[2]),
                payload=json.loads(r[3]),
                payload_hash=str(r[4]),
                created=bool(r[5]),
                parent_uuid=None if r[6] is None else str(r[6]),
                attempts=int(r[7]),
            )
            for r in rows
        ]

    def confirm(self, items: Iterable[OutboxItem], now: float) -> None:
        """The backend holds these payloads: mark created and drop each row unless a newer version arrived."""
        items = list(items)
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE ingest_entities SET created = 1, confirmed_hash = ?, updated_at = ? WHERE uuid = ?",
                [(i.payload_hash, now, i.uuid) for i in items],
            )
            conn.executemany(
                "DELETE FROM ingest_outbox WHERE uuid = ? AND version = ?",
                [(i.uuid, i.version) for i in items],
            )

    def mark_exists(self, uuids: Iterable[str], now: float) -> None:
        """The backend already holds these entities (found after a conflict): their next send is an update."""
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE ingest_entities SET created = 1, updated_at = ? WHERE uuid = ?",
                [(now, u) for u in uuids],
            )

    def mark_missing(self, uuids: Iterable[str], now: float) -> None:
        """The backend lost these entities (404 on update or on a child's create): create them again."""
        with self.db.transaction() as conn:
            for uuid in uuids:
                row = conn.execute(
                    "SELECT kind, skipped FROM ingest_entities WHERE uuid = ?", (uuid,)
                ).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "UPDATE ingest_entities SET created = 0, confirmed_hash = NULL, updated_at = ? WHERE uuid = ?",
                    (now, uuid),
                )
                if not row[1]:
                    kind = EntityKind(row[0])
                    conn.execute(
                        "INSERT INTO ingest_outbox(uuid, kind, priority, version, enqueued_at) VALUES(?,?,?,1,?) "
                        "ON CONFLICT(uuid) DO UPDATE SET next_attempt_at = 0",
                        (uuid, kind.value, KINDS[kind].send_order, now),
                    )

    def defer(self, items: Iterable[OutboxItem], error: str, delay_s: float, now: float) -> None:
        """Keep these rows for a later attempt (``delay_s`` from now) and remember why."""
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE ingest_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                "WHERE uuid = ?",
                [(now + delay_s, error[:500], i.uuid) for i in items],
            )

    # ------------------------------------------------------------------ spill

    def spill(self, paths: Iterable[str], now: float) -> None:
        """Park paths on disk while the in-memory queue is full."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO ingest_spill(path, added_at) VALUES(?, ?)", [(p, now) for p in paths]
            )

    def unspill(self, limit: int) -> list[str]:
        """Take up to ``limit`` parked paths back (oldest first)."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT path FROM ingest_spill ORDER BY added_at LIMIT ?", (limit,)
            ).fetchall()
            paths = [str(r[0]) for r in rows]
            conn.executemany("DELETE FROM ingest_spill WHERE path = ?", [(p,) for p in paths])
        return paths

    def spilled(self) -> int:
        """How many paths are parked on disk."""
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM ingest_spill").fetchone()[0])


__all__ = [
    "NOT_SYNTHESIZED",
    "SYNTHESIZED_COMPLETED",
    "SYNTHESIZED_RANK",
    "SYNTHESIZED_SOURCE",
    "SYNTHESIZED_WAITING",
    "ApplyResult",
    "BuildParent",
    "CommitResult",
    "Contribution",
    "FileRecord",
    "IngestStore",
    "OutboxItem",
    "Outcome",
    "Render",
    "payload_hash",
]
