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
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.ingest.identity import SEND_ORDER, EntityKind
from agent.state.database import Database

SCHEMA_COMPONENT = "ingest"
SCHEMA_VERSION = 2

#: Steps from one schema version to the next (see ``Database.ensure_schema``).
_MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE ingest_entities ADD COLUMN synthesized INTEGER NOT NULL DEFAULT 0",
}

#: Source name and merge rank of a parent built from its children's paths: below every file's rank, so any real
#: source overrides every field it sets.
SYNTHESIZED_SOURCE = "synthesized"
SYNTHESIZED_RANK = -1

#: ``ingest_entities.synthesized`` values.
NOT_SYNTHESIZED, SYNTHESIZED_WAITING, SYNTHESIZED_COMPLETED = 0, 1, 2

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


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one source knows about one entity.

    Attributes:
        kind: the entity kind.
        uuid: the entity's deterministic UUID.
        acq_key: the acquisition key the entity belongs to.
        natural_id: EPU's natural id (the acquisition key for acquisitions and grids).
        parent_uuid: the parent entity's UUID (``None`` for an acquisition).
        source: the contributing source (one row per entity and source; a newer version replaces an older one).
        rank: merge order; a higher rank's fields override a lower rank's.
        order_key: version of this source's information; an older ``order_key`` never replaces a newer one (two
            foil-hole images of one hole: the newest by file-name timestamp wins whatever the arrival order).
        fields: the (JSON-serialisable) fields this source sets; merged in rank order and rendered into the
            wire payload by the ``render`` callable of :meth:`IngestStore.apply_contributions`.
        primary: whether this source makes the entity real. An entity known only from secondary sources (a
            ``_Fractions.xml`` without its micrograph XML) is kept but never sent.
    """

    kind: EntityKind
    uuid: str
    acq_key: str
    natural_id: str
    parent_uuid: str | None
    source: str
    rank: int
    order_key: str
    fields: dict[str, Any]
    primary: bool = True


Render = Callable[[EntityKind, dict[str, Any]], tuple[dict[str, Any], bool]]
"""Merged fields of one entity -> (wire payload, skip). ``skip`` keeps the entity off the backend."""

BuildParent = Callable[[EntityKind, str, dict[str, Any]], "Contribution | None"]
"""(child kind, acquisition key, child's merged fields) -> the synthesized contribution of the child's parent,
or ``None`` when the child's fields do not say enough to place it."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """The processed version of one file: recorded so that an unchanged file is never processed twice."""

    path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str
    status: str  # "done" or "failed"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One sendable outbox row with the entity's current payload."""

    uuid: str
    kind: EntityKind
    version: int
    payload: dict[str, Any]
    payload_hash: str
    created: bool
    parent_uuid: str | None
    attempts: int


@dataclass(slots=True)
class ApplyResult:
    """What one :meth:`IngestStore.apply_contributions` call changed."""

    enqueued: int = 0
    unchanged: int = 0
    touched: set[str] = field(default_factory=set)
    completed: list[Contribution] = field(default_factory=list)
    """Real contributions that arrived for synthesized entities (the entity's own file appeared)."""


class IngestStore:
    """Typed access to the ingest tables; every write goes through one short transaction."""

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
    def record_file(conn: sqlite3.Connection, rec: FileRecord, now: float) -> None:
        """Record the processed version of one file (inside the caller's transaction)."""
        conn.execute(
            _RECORD_FILE_SQL,
            (rec.path, rec.kind, rec.size, rec.mtime_ns, rec.content_hash, rec.status, rec.error, now),
        )

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
            enqueue.append((uuid, c.kind.value, SEND_ORDER[c.kind], now))
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

    # ------------------------------------------------------------------ atlas

    @staticmethod
    def store_atlas(conn: sqlite3.Connection, path: str, data: str, now: float) -> list[str]:
        """Keep a parsed atlas (serialised) and return the acquisition keys whose session claims it."""
        conn.execute(
            "INSERT INTO ingest_atlas_files(path, data, updated_at) VALUES(?,?,?) "
            "ON CONFLICT(path) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
            (path, data, now),
        )
        rows = conn.execute("SELECT acquisition_key FROM ingest_atlas_claims WHERE atlas_path = ?", (path,))
        return [str(r[0]) for r in rows]

    @staticmethod
    def claim_atlas(conn: sqlite3.Connection, acq_key: str, path: str) -> str | None:
        """Record that ``acq_key``'s session points to the atlas at ``path``; return the atlas if already parsed."""
        conn.execute(
            "INSERT INTO ingest_atlas_claims(acquisition_key, atlas_path) VALUES(?,?) "
            "ON CONFLICT(acquisition_key) DO UPDATE SET atlas_path=excluded.atlas_path",
            (acq_key, path),
        )
        row = conn.execute("SELECT data FROM ingest_atlas_files WHERE path = ?", (path,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------- synthesized parents

    @staticmethod
    def merged_fields(conn: sqlite3.Connection, uuid: str) -> dict[str, Any]:
        """The merged contribution fields of one entity (rank order, as :meth:`apply_contributions` merges)."""
        rows = conn.execute(
            "SELECT source, rank, order_key, fields FROM ingest_contributions WHERE uuid = ?", (uuid,)
        ).fetchall()
        merged: dict[str, Any] = {}
        for _source, _rank, _order, fields in sorted(rows, key=lambda r: (int(r[1]), str(r[2]), str(r[0]))):
            merged.update(json.loads(fields))
        return merged

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
                    fields = IngestStore.merged_fields(conn, str(child_uuid))
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

    def synthesized_counts(self) -> dict[str, dict[str, int]]:
        """Per kind: parents built from their children's paths (``synthesized``) and how many of those their
        own file has completed since (``completed``)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT kind, COUNT(*), SUM(synthesized = ?) FROM ingest_entities WHERE synthesized > 0 "
                "GROUP BY kind",
                (SYNTHESIZED_COMPLETED,),
            ).fetchall()
        return {str(r[0]): {"synthesized": int(r[1]), "completed": int(r[2] or 0)} for r in rows}

    def acquisition_fields(self) -> dict[str, dict[str, Any]]:
        """Merged fields of every acquisition by acquisition key, with ``"_synthesized"``: the entity's mark."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT uuid, acquisition_key, synthesized FROM ingest_entities WHERE kind = ?",
                (EntityKind.ACQUISITION.value,),
            ).fetchall()
            out: dict[str, dict[str, Any]] = {}
            for uuid, acq, synthesized in rows:
                out[str(acq)] = {
                    **IngestStore.merged_fields(conn, str(uuid)),
                    "_synthesized": int(synthesized),
                }
        return out

    def atlas_known(self, acq_key: str) -> bool:
        """Whether an atlas entity exists for this acquisition."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM ingest_entities WHERE kind = ? AND acquisition_key = ? LIMIT 1",
                (EntityKind.ATLAS.value, acq_key),
            ).fetchone()
        return row is not None

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
                        (uuid, kind.value, SEND_ORDER[kind], now),
                    )

    def defer(self, items: Iterable[OutboxItem], error: str, delay_s: float, now: float) -> None:
        """Keep these rows for a later attempt (``delay_s`` from now) and remember why."""
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE ingest_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                "WHERE uuid = ?",
                [(now + delay_s, error[:500], i.uuid) for i in items],
            )

    def outbox_depth(self) -> int:
        """Rows not yet confirmed by the backend (orphans included)."""
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM ingest_outbox").fetchone()[0])

    def next_due(self) -> float | None:
        """Earliest ``next_attempt_at`` among deferred rows, or ``None`` when none is deferred."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM ingest_outbox WHERE next_attempt_at > 0"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def orphans(self) -> dict[str, Any]:
        """Outbox rows whose parent entity has not been seen yet: counts by kind and the oldest one's age."""
        now = time.time()
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT e.kind, COUNT(*), MIN(e.first_seen) FROM ingest_outbox o "
                "JOIN ingest_entities e ON e.uuid = o.uuid "
                "LEFT JOIN ingest_entities p ON p.uuid = e.parent_uuid "
                "WHERE e.parent_uuid IS NOT NULL AND (p.uuid IS NULL OR p.ready = 0) GROUP BY e.kind"
            ).fetchall()
        by_kind = {str(r[0]): int(r[1]) for r in rows}
        oldest = min((float(r[2]) for r in rows), default=None)
        return {
            "total": sum(by_kind.values()),
            "by_kind": by_kind,
            "oldest_age_s": None if oldest is None else round(now - oldest, 3),
        }

    def entity_counts(self) -> dict[str, dict[str, int]]:
        """Per kind: entities known, created on the backend, skipped, and dirty (in the outbox)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT kind, COUNT(*), SUM(created), SUM(skipped) FROM ingest_entities GROUP BY kind"
            ).fetchall()
            dirty = dict(conn.execute("SELECT kind, COUNT(*) FROM ingest_outbox GROUP BY kind").fetchall())
        return {
            str(r[0]): {
                "known": int(r[1]),
                "created": int(r[2] or 0),
                "skipped": int(r[3] or 0),
                "pending": int(dirty.get(r[0], 0)),
            }
            for r in rows
        }

    def file_counts(self) -> dict[str, int]:
        """Processed files by status."""
        with self.db.read() as conn:
            return {
                str(k): int(v)
                for k, v in conn.execute(
                    "SELECT status, COUNT(*) FROM ingest_files GROUP BY status"
                ).fetchall()
            }

    def failed_files(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent files that could not be processed, with the reason."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT path, kind, error, updated_at FROM ingest_files WHERE status = 'failed' "
                "ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"path": r[0], "kind": r[1], "error": r[2], "at": r[3]} for r in rows]

    def deferred_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        """Outbox rows that failed at least once, with the last error."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT uuid, kind, attempts, last_error FROM ingest_outbox WHERE attempts > 0 "
                "ORDER BY attempts DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"uuid": r[0], "kind": r[1], "attempts": r[2], "error": r[3]} for r in rows]

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
    "Contribution",
    "FileRecord",
    "IngestStore",
    "OutboxItem",
    "payload_hash",
]
