"""Durable agent state: one SQLite database (WAL) in the state directory.

``database.open_database`` opens it; each subsystem (ingest state and outbox, instruction journal) registers its own
tables through ``ensure_schema`` so the file stays one database with independent, versioned schemas.
"""

from agent.state.database import Database, open_database

__all__ = ["Database", "open_database"]
