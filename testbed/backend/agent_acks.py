"""Acknowledgements (smartem-reference.md section 7, per compatibility mode): validate one ack, apply it to its
instruction and record the attempt with its outcome, in one transaction."""

from __future__ import annotations

import sqlite3
import uuid as uuid_mod
from typing import Any

from testbed.backend.agent_rows import FINAL_ACK_STATUSES, record_history
from testbed.backend.db import Db, iso, utcnow
from testbed.backend.errors import Conflict, Forbidden, NotFound, Rejected
from testbed.backend.options import Compat


def acknowledge_instruction(
    db: Db, compat: Compat, agent_id: str, session_id: str, instruction_id: str, ack: dict[str, Any]
) -> dict[str, Any]:
    """Apply an acknowledgement and return SmartEM's success body; raise :class:`Rejected` (with the
    status of section 7) otherwise. The attempt is recorded either way."""
    now = iso(utcnow())
    status = str(ack["status"])
    with db.tx() as conn:
        try:
            outcome, acknowledged_at = _check_ack(
                conn, compat, agent_id, session_id, instruction_id, status, now
            )
        except Rejected as exc:
            rejection: Rejected | None = exc
            outcome, acknowledged_at = "rejected", now
        else:
            rejection = None
        conn.execute(
            "INSERT INTO acknowledgement (acknowledgement_id, instruction_id, agent_id, session_id,"
            " status,"
            " result, error_message, processing_time_ms, processed_at, created_at, outcome,"
            " http_status, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid_mod.uuid4()),
                instruction_id,
                agent_id,
                session_id,
                status,
                ack.get("result"),
                ack.get("error_message"),
                ack.get("processing_time_ms"),
                now if status in ("processed", "failed") else None,
                now,
                outcome,
                200 if rejection is None else rejection.status_code,
                None if rejection is None else rejection.detail,
            ),
        )
        if rejection is None:
            conn.execute(
                "UPDATE agent_session SET last_activity_at = ? WHERE session_id = ?", (now, session_id)
            )
            conn.execute(
                "UPDATE agent_connection SET last_heartbeat_at = ? WHERE session_id = ? AND status ="
                " 'active'",
                (now, session_id),
            )
    if rejection is not None:
        raise rejection
    return {
        "status": "success",
        "instruction_id": instruction_id,
        "acknowledged_at": acknowledged_at,
        "agent_id": agent_id,
        "session_id": session_id,
    }


def _check_ack(
    conn: sqlite3.Connection,
    compat: Compat,
    agent_id: str,
    session_id: str,
    instruction_id: str,
    status: str,
    now: str,
) -> tuple[str, str]:
    """Validate and apply one ack inside the caller's transaction; returns (outcome, acknowledged_at)."""
    session = conn.execute("SELECT * FROM agent_session WHERE session_id = ?", (session_id,)).fetchone()
    if session is None:
        raise NotFound(f"Session {session_id} not found")
    if session["agent_id"] != agent_id:
        raise Forbidden(f"Session {session_id} does not belong to agent {agent_id}")
    if session["status"] != "active":
        raise Rejected(f"Session {session_id} is not active")
    if compat == "smartem":
        # SmartEM needs a live SSE connection for the agent, and one for this very session.
        active = conn.execute(
            "SELECT session_id FROM agent_connection WHERE agent_id = ? AND status = 'active'",
            (agent_id,),
        ).fetchall()
        if not active:
            raise NotFound("Agent not connected")
        if all(r["session_id"] != session_id for r in active):
            raise Rejected("No active connection for this session")
    row = conn.execute("SELECT * FROM instruction WHERE instruction_id = ?", (instruction_id,)).fetchone()
    if row is None:
        raise NotFound("Instruction not found")
    if row["session_id"] != session_id:
        raise Rejected("Instruction does not belong to this session")
    if row["agent_id"] != agent_id:
        raise Rejected("Instruction does not belong to this agent")
    if compat == "smartem":
        if row["status"] != "sent":
            raise Rejected("Instruction cannot be acknowledged (invalid status)")
        _apply_ack(conn, row, status, now, final=True)
        return "accepted", now
    # strict
    if row["sent_at"] is None:
        raise Conflict("Instruction has not been delivered yet")
    previous = row["ack_status"]
    if previous in FINAL_ACK_STATUSES:
        if status == previous or status == "received":
            # A retried ack (or a late `received`) changes nothing: answer as the first time.
            return "repeated", row["acknowledged_at"]
        raise Conflict(f"Instruction already acknowledged as {previous}; cannot change it to {status}")
    if status == "received" and previous == "received":
        return "repeated", now
    _apply_ack(conn, row, status, now, final=status in FINAL_ACK_STATUSES)
    return "accepted", now


def _apply_ack(conn: sqlite3.Connection, row: sqlite3.Row, status: str, now: str, *, final: bool) -> None:
    if final:
        conn.execute(
            "UPDATE instruction SET status = 'acknowledged', acknowledged_at = ?, ack_status = ? WHERE"
            " seq = ?",
            (now, status, row["seq"]),
        )
    else:
        conn.execute("UPDATE instruction SET ack_status = ? WHERE seq = ?", (status, row["seq"]))
    record_history(conn, row["instruction_id"], "acknowledged" if final else "received", ack_status=status)


__all__ = ["acknowledge_instruction"]
