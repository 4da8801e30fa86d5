"""SQLite connection management shared by the ingest state, the outbox and the instruction journal.

Why a thin wrapper: every subsystem needs the same pragmas (WAL, synchronous=NORMAL, busy timeout, foreign keys),
a per-component schema version, and a lock so that one connection can be shared between the asyncio loop's
worker threads without "database is locked" surprises. SQLite in WAL mode allows one writer at a time anyway, so a
process-wide lock around write transactions costs nothing and removes a class of bugs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

DB_FILE_NAME = "em-agent.sqlite3"


class Database:
    """One SQLite connection with a lock; use :meth:`transaction` for writes and :meth:`read` for reads."""

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
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error)."""
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
        """Borrow the connection for reads (serialised with writers of this process)."""
        with self._lock:
            yield self._conn

    def ensure_schema(
        self, component: str, version: int, ddl: str, migrations: Mapping[int, str] | None = None
    ) -> None:
        """Create ``component``'s tables with ``ddl``, or bring an older installed version up to ``version``.

        ``ddl`` is the current schema and must be idempotent (``CREATE TABLE IF NOT EXISTS`` ...).
        ``migrations[v]`` holds the statements that turn schema ``v - 1`` into ``v`` (``ALTER TABLE`` ...): a
        database written by an older agent runs each step above its installed version, in order, in the same
        transaction, before ``ddl`` creates whatever is new. A database from a newer agent version is refused
        rather than silently misread.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM schema_versions WHERE component = ?", (component,)
            ).fetchone()
            if row is not None and int(row["version"]) > version:
                raise RuntimeError(
                    f"state database {self.path} has {component} schema v{row['version']}, "
                    f"newer than this agent's v{version}; upgrade em-agent or use another state directory"
                )
            if row is not None:
                for step in range(int(row["version"]) + 1, version + 1):
                    for statement in (migrations or {}).get(step, "").split(";"):
                        if statement.strip():
                            conn.execute(statement)
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions(component, version) VALUES(?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version),
            )

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.ProgrammingError:
                return
            self._conn.close()


def open_database(state_dir: Path) -> Database:
    """Open (creating if needed) the agent's state database in ``state_dir``."""
    return Database(state_dir / DB_FILE_NAME)
