"""Read-only queries of the ingest tables: what ``agent.status``, ``ingest --once`` and the findings report.

:class:`StoreQueries` is the read side of :class:`~agent.ingest.store.IngestStore` (which inherits it); every
method reads in one short read transaction and writes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from agent.ingest.identity import EntityKind
from agent.ingest.records import SYNTHESIZED_COMPLETED
from agent.state.database import Database


def merged_fields(conn: sqlite3.Connection, uuid: str) -> dict[str, Any]:
    """The merged contribution fields of one entity (rank order, as :meth:`IngestStore.apply_contributions <agent.ingest.store.IngestStore.apply_contributions>` merges)."""
    rows = conn.execute(
        "SELECT source, rank, order_key, fields FROM ingest_contributions WHERE uuid = ?", (uuid,)
    ).fetchall()
    merged: dict[str, Any] = {}
    for _source, _rank, _order, fields in sorted(rows, key=lambda r: (int(r[1]), str(r[2]), str(r[0]))):
        merged.update(json.loads(fields))
    return merged


class StoreQueries:
    """Counts and listings over the ingest tables (mixed into :class:`~agent.ingest.store.IngestStore`)."""

    db: Database

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
                    **merged_fields(conn, str(uuid)),
                    "_synthesized": int(synthesized),
                }
        return out

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


__all__ = ["StoreQueries", "merged_fields"]
