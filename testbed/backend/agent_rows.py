"""Shared vocabulary of the agent store's tables: priority and acknowledgement statuses, the new-instruction
record, row-to-dict conversion and the ``instruction_history`` writer."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from testbed.backend.db import iso, utcnow

PRIORITY_RANK: dict[str, int] = {"critical": 3, "high": 2, "normal": 1, "low": 0}
"""Numeric priority used by strict mode (higher first)."""

FINAL_ACK_STATUSES = frozenset({"processed", "failed", "declined"})
ACK_STATUSES = FINAL_ACK_STATUSES | {"received"}


@dataclass(frozen=True)
class NewInstruction:
    """An instruction to create (the debug endpoint's fields, resolved)."""

    session_id: str
    instruction_type: str
    payload: Any
    priority: str
    sequence_number: int | None
    expires_at: datetime | None
    metadata: dict[str, Any]
    instruction_id: str | None = None


def session_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "session_id": row["session_id"],
        "agent_id": row["agent_id"],
        "acquisition_uuid": row["acquisition_uuid"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "created_at": row["created_at"],
        "started_at": None,
        "ended_at": row["ended_at"],
        "last_activity_at": row["last_activity_at"],
        "experimental_parameters": json.loads(row["experimental_parameters"]),
    }


def connection_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "connection_id": row["connection_id"],
        "agent_id": row["agent_id"],
        "session_id": row["session_id"],
        "connection_type": row["connection_type"],
        "status": row["status"],
        "created_at": row["created_at"],
        "last_heartbeat_at": row["last_heartbeat_at"],
        "closed_at": row["closed_at"],
        "close_reason": row["close_reason"],
        "client_info": json.loads(row["client_info"]),
    }


def instruction_event_data(row: sqlite3.Row) -> dict[str, Any]:
    """The ``data`` of an SSE ``instruction`` event, exactly SmartEM's keys (section 5)."""
    return {
        "type": "instruction",
        "instruction_id": row["instruction_id"],
        "agent_id": row["agent_id"],
        "session_id": row["session_id"],
        "instruction_type": row["instruction_type"],
        "payload": json.loads(row["payload"]),
        "sequence_number": row["sequence_number"],
        "priority": row["priority"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "metadata": json.loads(row["metadata"]),
    }


def instruction_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "instruction_id": row["instruction_id"],
        "session_id": row["session_id"],
        "agent_id": row["agent_id"],
        "instruction_type": row["instruction_type"],
        "payload": json.loads(row["payload"]),
        "sequence_number": row["sequence_number"],
        "priority": row["priority"],
        "status": row["status"],
        "ack_status": row["ack_status"],
        "created_at": row["created_at"],
        "sent_at": row["sent_at"],
        "acknowledged_at": row["acknowledged_at"],
        "expires_at": row["expires_at"],
        "retry_count": row["retry_count"],
        "max_retries": row["max_retries"],
        "metadata": json.loads(row["metadata"]),
        "last_event_id": row["last_event_id"],
    }


def record_history(conn: sqlite3.Connection, instruction_id: str, event: str, **detail: Any) -> None:
    conn.execute(
        "INSERT INTO instruction_history (instruction_id, at, event, detail) VALUES (?, ?, ?, ?)",
        (instruction_id, iso(utcnow()), event, json.dumps(detail)),
    )


__all__ = [
    "ACK_STATUSES",
    "FINAL_ACK_STATUSES",
    "PRIORITY_RANK",
    "NewInstruction",
    "connection_dict",
    "instruction_dict",
    "instruction_event_data",
    "record_history",
    "session_dict",
]
