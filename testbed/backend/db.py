"""The backend's SQLite file: one connection, a lock, the schema, and time helpers.

The schema mirrors the SmartEM tables an agent touches (smartem-reference.md section 14) in a compact form:
entities live in one table keyed by (kind, uuid) with their request fields as JSON, because the backend only
needs to store, return and count them. Agent sessions, connections, instructions, acknowledgements, logs and
heartbeats get their own tables. Stopping and restarting the server reopens the same file, so nothing is lost.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entity (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    uuid TEXT NOT NULL,
    parent_uuid TEXT,
    acquisition_uuid TEXT,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    update_count INTEGER NOT NULL DEFAULT 0,
    registered INTEGER NOT NULL DEFAULT 0,
    registered_count INTEGER,
    UNIQUE (kind, uuid)
);
CREATE INDEX IF NOT EXISTS entity_parent ON entity (kind, parent_uuid);
CREATE INDEX IF NOT EXISTS entity_acquisition ON entity (acquisition_uuid, kind);
CREATE TABLE IF NOT EXISTS tile_position (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tile_uuid TEXT NOT NULL,
    gridsquare_uuid TEXT,
    acquisition_uuid TEXT,
    center_x INTEGER NOT NULL,
    center_y INTEGER NOT NULL,
    size_width INTEGER NOT NULL,
    size_height INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tile_position_pair ON tile_position (tile_uuid, gridsquare_uuid)
    WHERE gridsquare_uuid IS NOT NULL;
CREATE TABLE IF NOT EXISTS agent_session (
    session_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    acquisition_uuid TEXT,
    name TEXT,
    description TEXT,
    experimental_parameters TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ended_at TEXT,
    last_activity_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_connection (
    connection_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    connection_type TEXT NOT NULL DEFAULT 'sse',
    client_info TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT
);
CREATE INDEX IF NOT EXISTS agent_connection_session ON agent_connection (session_id, status);
CREATE TABLE IF NOT EXISTS instruction (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instruction_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    instruction_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    sequence_number INTEGER,
    priority TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    acknowledged_at TEXT,
    expires_at TEXT,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    ack_status TEXT,
    last_event_id INTEGER
);
CREATE INDEX IF NOT EXISTS instruction_session ON instruction (session_id, status);
CREATE TABLE IF NOT EXISTS instruction_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instruction_id TEXT NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS instruction_history_id ON instruction_history (instruction_id);
CREATE TABLE IF NOT EXISTS delivery (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    instruction_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acknowledgement (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    acknowledgement_id TEXT NOT NULL,
    instruction_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error_message TEXT,
    processing_time_ms INTEGER,
    processed_at TEXT,
    created_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS acknowledgement_instruction ON acknowledgement (instruction_id);
CREATE TABLE IF NOT EXISTS agent_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    level TEXT NOT NULL,
    logger_name TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeat (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 (always microseconds, always ``+00:00``) so stored times compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class Db:
    """One SQLite connection shared by the server's worker threads, serialised by a lock.

    Handlers run store calls in worker threads (so a 1000-row batch never stalls the event loop); the lock
    makes each transaction atomic with respect to the others, which is what SmartEM gets from PostgreSQL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: access is serialised by self._lock instead.
        self._conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(_SCHEMA)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on normal exit, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Consistent reads under the lock (no transaction needed for single statements)."""
        with self._lock:
            yield self._conn

    def clear(self) -> int:
        """Delete every row of every table and restart the id counters (``POST /testbed/reset``); returns the
        number of rows deleted."""
        with self.tx() as conn:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            deleted = 0
            for table in tables:
                deleted += conn.execute(f'DELETE FROM "{table}"').rowcount
            # AUTOINCREMENT counters (delivery event ids among them) start again from 1, as in a new file.
            conn.execute("DELETE FROM sqlite_sequence")
        return deleted

    def close(self) -> None:
        """Close the connection; the file stays for the next start."""
        with self._lock:
            self._conn.close()


__all__ = ["Db", "iso", "utcnow"]
