"""Storage and rules for agent sessions, SSE connections, instructions, acknowledgements, heartbeats and logs.

The instruction lifecycle follows smartem-reference.md section 8: ``pending`` (created) -> ``sent`` (committed
just before the event is written to a stream) -> ``acknowledged``; the expiry sweep resets overdue
``pending``/``sent`` rows to ``pending`` with a new expiry and marks them ``expired`` once ``max_retries``
resets are used up.

The two compatibility modes differ in a few rules, each marked where it is applied:

* ordering: ``strict`` sorts priorities numerically (critical > high > normal > low); ``smartem`` sorts
  the text descending as SmartEM does (``normal > low > high > critical``);
* acknowledgement: ``strict`` accepts an ack without a live connection, allows ``received`` then a final
  status, answers an identical repeat with the original 200 and a different final status with 409;
  ``smartem`` demands an active connection and a ``sent`` instruction (one-shot acks), exactly the checks of
  section 7;
* re-sending on reconnect: only ``strict`` re-sends sent-but-unacknowledged instructions.

Every ack attempt, accepted or not, is recorded with its outcome so tests can see what the agent sent.

The acknowledgement rules live in :mod:`testbed.backend.agent_acks`; the shared constants, the new-instruction
record and row conversion in :mod:`testbed.backend.agent_rows`.
"""

from __future__ import annotations

import json
import uuid as uuid_mod
from datetime import timedelta
from typing import Any

from testbed.backend.agent_acks import acknowledge_instruction
from testbed.backend.agent_rows import (
    PRIORITY_RANK,
    NewInstruction,
    connection_dict,
    instruction_dict,
    instruction_event_data,
    record_history,
    session_dict,
)
from testbed.backend.db import Db, iso, utcnow
from testbed.backend.errors import Conflict, Forbidden, NotFound
from testbed.backend.options import Compat

_STRICT_ORDER = "priority_rank DESC, sequence_number IS NULL, sequence_number ASC, created_at ASC, seq ASC"
# SmartEM: ORDER BY priority DESC (a text column), sequence_number ASC (PostgreSQL puts NULLs last),
# created_at.
_SMARTEM_ORDER = "priority DESC, sequence_number IS NULL, sequence_number ASC, created_at ASC, seq ASC"


class AgentStore:
    """Sessions, connections, instructions, acknowledgements, heartbeats and logs."""

    def __init__(self, db: Db, *, compat: Compat, max_retries: int = 3) -> None:
        self._db = db
        self._compat = compat
        self._max_retries = max_retries

    # -- sessions --------------------------------------------------------------------------------------------

    def create_session(
        self,
        *,
        agent_id: str,
        session_id: str | None = None,
        acquisition_uuid: str | None = None,
        name: str | None = None,
        description: str | None = None,
        experimental_parameters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an ``active`` session; the acquisition, when named, must exist (as in SmartEM)."""
        now = iso(utcnow())
        sid = session_id or str(uuid_mod.uuid4())
        with self._db.tx() as conn:
            if (
                acquisition_uuid is not None
                and conn.execute(
                    "SELECT 1 FROM entity WHERE kind = 'acquisition' AND uuid = ?", (acquisition_uuid,)
                ).fetchone()
                is None
            ):
                raise NotFound(f"Acquisition {acquisition_uuid} not found")
            if conn.execute("SELECT 1 FROM agent_session WHERE session_id = ?", (sid,)).fetchone():
                raise Conflict(f"Session {sid} already exists")
            conn.execute(
                "INSERT INTO agent_session (session_id, agent_id, acquisition_uuid, name, description,"
                " experimental_parameters, status, created_at, last_activity_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
                (
                    sid,
                    agent_id,
                    acquisition_uuid,
                    name,
                    description,
                    json.dumps(experimental_parameters or {}),
                    now,
                    now,
                ),
            )
            row = conn.execute("SELECT * FROM agent_session WHERE session_id = ?", (sid,)).fetchone()
        return session_dict(row)

    def close_session(self, session_id: str) -> dict[str, Any]:
        """Mark a session ``ended`` (its streams end at their next wake-up)."""
        now = iso(utcnow())
        with self._db.tx() as conn:
            cur = conn.execute(
                "UPDATE agent_session SET status = 'ended', ended_at = ? WHERE session_id = ?",
                (now, session_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"Session {session_id} not found")
            row = conn.execute("SELECT * FROM agent_session WHERE session_id = ?", (session_id,)).fetchone()
        return session_dict(row)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """One session or ``None``."""
        with self._db.read() as conn:
            row = conn.execute("SELECT * FROM agent_session WHERE session_id = ?", (session_id,)).fetchone()
        return None if row is None else session_dict(row)

    def list_sessions(self, *, active_only: bool) -> list[dict[str, Any]]:
        """Sessions, most recently active first."""
        where = "WHERE status = 'active'" if active_only else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM agent_session {where} ORDER BY last_activity_at DESC, created_at DESC"
            ).fetchall()
        return [session_dict(r) for r in rows]

    def validate_stream(self, agent_id: str, session_id: str) -> str | None:
        """Why a stream may not open (SmartEM's three checks), or ``None`` when it may."""
        session = self.get_session(session_id)
        if session is None:
            return f"Session {session_id} not found"
        if session["agent_id"] != agent_id:
            return f"Session {session_id} does not belong to agent {agent_id}"
        if session["status"] != "active":
            return f"Session {session_id} is not active (status {session['status']})"
        return None

    # -- connections -----------------------------------------------------------------------------------------

    def open_connection(self, agent_id: str, session_id: str, client_info: dict[str, Any]) -> str:
        """Insert an ``active`` SSE connection row and return its id."""
        now = iso(utcnow())
        cid = str(uuid_mod.uuid4())
        with self._db.tx() as conn:
            conn.execute(
                "INSERT INTO agent_connection (connection_id, session_id, agent_id, client_info, status,"
                " created_at, last_heartbeat_at) VALUES (?, ?, ?, ?, 'active', ?, ?)",
                (cid, session_id, agent_id, json.dumps(client_info), now, now),
            )
        return cid

    def close_connection(self, connection_id: str, reason: str) -> None:
        """Mark a connection ``closed`` (no-op when already closed)."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE agent_connection SET status = 'closed', closed_at = ?, close_reason = ?"
                " WHERE connection_id = ? AND status = 'active'",
                (iso(utcnow()), reason, connection_id),
            )

    def touch_connection(self, connection_id: str) -> None:
        """Record a server heartbeat on a connection (SSE ``heartbeat`` event sent)."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE agent_connection SET last_heartbeat_at = ? WHERE connection_id = ?",
                (iso(utcnow()), connection_id),
            )

    def list_connections(
        self, *, session_id: str | None = None, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Connections, newest first."""
        clauses, args = [], []
        if session_id is not None:
            clauses.append("session_id = ?")
            args.append(session_id)
        if active_only:
            clauses.append("status = 'active'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM agent_connection {where} ORDER BY created_at DESC", args
            ).fetchall()
        return [connection_dict(r) for r in rows]

    # -- instructions ----------------------------------------------------------------------------------------

    def create_instruction(self, new: NewInstruction) -> dict[str, Any]:
        """Insert a ``pending`` instruction for the session's agent."""
        now = iso(utcnow())
        iid = new.instruction_id or str(uuid_mod.uuid4())
        with self._db.tx() as conn:
            session = conn.execute(
                "SELECT agent_id FROM agent_session WHERE session_id = ?", (new.session_id,)
            ).fetchone()
            if session is None:
                raise NotFound("Session not found")
            if conn.execute("SELECT 1 FROM instruction WHERE instruction_id = ?", (iid,)).fetchone():
                raise Conflict(f"Instruction {iid} already exists")
            conn.execute(
                "INSERT INTO instruction (instruction_id, session_id, agent_id, instruction_type, payload,"
                " sequence_number, priority, priority_rank, status, created_at, expires_at, max_retries,"
                " metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (
                    iid,
                    new.session_id,
                    session["agent_id"],
                    new.instruction_type,
                    json.dumps(new.payload),
                    new.sequence_number,
                    new.priority,
                    PRIORITY_RANK.get(new.priority, PRIORITY_RANK["normal"]),
                    now,
                    None if new.expires_at is None else iso(new.expires_at),
                    self._max_retries,
                    json.dumps(new.metadata),
                ),
            )
            record_history(conn, iid, "created", priority=new.priority, sequence_number=new.sequence_number)
            row = conn.execute("SELECT * FROM instruction WHERE instruction_id = ?", (iid,)).fetchone()
        return instruction_dict(row)

    def claim_for_stream(
        self, session_id: str, connection_id: str, *, resend_unacked: bool, after_event_id: int | None
    ) -> list[tuple[int, dict[str, Any]]]:
        """Mark the session's deliverable instructions ``sent`` on ``connection_id`` and return
        ``(event_id, event data)`` in delivery order; committed before the caller writes them (as SmartEM).

        Deliverable: ``pending`` and unexpired; plus, when ``resend_unacked`` (strict mode, on connect),
        ``sent`` instructions without a final ack whose last delivery is newer than ``after_event_id`` (the
        client's ``Last-Event-ID``; ``None`` re-sends them all).
        """
        now = iso(utcnow())
        order = _STRICT_ORDER if self._compat == "strict" else _SMARTEM_ORDER
        clauses = ["status = 'pending'"]
        args: list[Any] = [session_id, now]
        if resend_unacked:
            if after_event_id is None:
                clauses.append("status = 'sent'")
            else:
                clauses.append("(status = 'sent' AND last_event_id > ?)")
                args.append(after_event_id)
        sql = (
            f"SELECT * FROM instruction WHERE session_id = ? AND (expires_at IS NULL OR expires_at > ?)"
            f" AND ({' OR '.join(clauses)}) ORDER BY {order}"
        )
        out: list[tuple[int, dict[str, Any]]] = []
        with self._db.tx() as conn:
            for row in conn.execute(sql, args).fetchall():
                cur = conn.execute(
                    "INSERT INTO delivery (instruction_id, connection_id, sent_at) VALUES (?, ?, ?)",
                    (row["instruction_id"], connection_id, now),
                )
                event_id = int(cur.lastrowid or 0)
                conn.execute(
                    "UPDATE instruction SET status = 'sent', sent_at = ?, last_event_id = ? WHERE seq = ?",
                    (now, event_id, row["seq"]),
                )
                record_history(
                    conn,
                    row["instruction_id"],
                    "resent" if row["status"] == "sent" else "sent",
                    event_id=event_id,
                    connection_id=connection_id,
                )
                out.append((event_id, instruction_event_data(row)))
        return out

    def max_event_id(self) -> int:
        """The newest delivery id (0 when none): a ``Last-Event-ID`` above it comes from another database."""
        with self._db.read() as conn:
            row = conn.execute("SELECT MAX(event_id) AS m FROM delivery").fetchone()
        return int(row["m"] or 0)

    def sweep_expired(self, *, extension: timedelta) -> set[str]:
        """SmartEM's expiry retry: overdue ``pending``/``sent`` rows go back to ``pending`` with a new expiry,
        or to ``expired`` after ``max_retries``. Returns the sessions that got instructions back to
        pending."""
        now = utcnow()
        renewed: set[str] = set()
        with self._db.tx() as conn:
            rows = conn.execute(
                "SELECT seq, instruction_id, session_id, retry_count, max_retries FROM instruction"
                " WHERE status IN ('pending', 'sent') AND expires_at IS NOT NULL AND expires_at <= ?",
                (iso(now),),
            ).fetchall()
            for row in rows:
                retries = row["retry_count"] + 1
                if retries >= row["max_retries"]:
                    conn.execute(
                        "UPDATE instruction SET status = 'expired', retry_count = ? WHERE seq = ?",
                        (retries, row["seq"]),
                    )
                    record_history(conn, row["instruction_id"], "expired", retry_count=retries)
                else:
                    new_expiry = iso(now + extension)
                    conn.execute(
                        "UPDATE instruction SET status = 'pending', retry_count = ?, expires_at = ? WHERE"
                        " seq = ?",
                        (retries, new_expiry, row["seq"]),
                    )
                    record_history(
                        conn,
                        row["instruction_id"],
                        "reset_to_pending",
                        retry_count=retries,
                        expires_at=new_expiry,
                    )
                    renewed.add(row["session_id"])
        return renewed

    def sweep_connections(self, *, stale_after: timedelta, live: set[str]) -> int:
        """Close connections without a heartbeat for ``stale_after`` (``stale_connection``); ``live`` ones (a
        stream is still open in strict mode) are kept. Returns how many were closed."""
        cutoff = iso(utcnow() - stale_after)
        closed = 0
        with self._db.tx() as conn:
            rows = conn.execute(
                "SELECT connection_id FROM agent_connection WHERE status = 'active' AND last_heartbeat_at"
                " < ?",
                (cutoff,),
            ).fetchall()
            for row in rows:
                if row["connection_id"] in live:
                    continue
                conn.execute(
                    "UPDATE agent_connection SET status = 'closed', closed_at = ?, close_reason ="
                    " 'stale_connection'"
                    " WHERE connection_id = ?",
                    (iso(utcnow()), row["connection_id"]),
                )
                closed += 1
        return closed

    def sweep_sessions(self, *, inactive_after: timedelta) -> int:
        """Mark ``active`` sessions without activity for ``inactive_after`` as ``inactive``."""
        cutoff = iso(utcnow() - inactive_after)
        with self._db.tx() as conn:
            cur = conn.execute(
                "UPDATE agent_session SET status = 'inactive' WHERE status = 'active' AND last_activity_at"
                " < ?",
                (cutoff,),
            )
        return cur.rowcount

    def touch_session(self, session_id: str) -> None:
        """Bump a session's ``last_activity_at`` (after a drain, an ack, a heartbeat)."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE agent_session SET last_activity_at = ? WHERE session_id = ?",
                (iso(utcnow()), session_id),
            )

    def get_instruction(self, instruction_id: str) -> dict[str, Any] | None:
        """One instruction with its full history (deliveries, acknowledgements, lifecycle events)."""
        found = self.instruction_history(instruction_id=instruction_id)
        return found[0] if found else None

    def instruction_history(
        self, *, session_id: str | None = None, instruction_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Instructions (oldest first) each with ``deliveries``, ``acknowledgements`` and ``history``."""
        clauses, args = [], []
        if session_id is not None:
            clauses.append("session_id = ?")
            args.append(session_id)
        if instruction_id is not None:
            clauses.append("instruction_id = ?")
            args.append(instruction_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT * FROM instruction {where} ORDER BY seq", args).fetchall()
            out = []
            for row in rows:
                item = instruction_dict(row)
                iid = row["instruction_id"]
                item["deliveries"] = [
                    dict(d)
                    for d in conn.execute(
                        "SELECT event_id, connection_id, sent_at FROM delivery WHERE instruction_id = ?"
                        " ORDER BY event_id",
                        (iid,),
                    )
                ]
                item["acknowledgements"] = [
                    dict(a)
                    for a in conn.execute(
                        "SELECT acknowledgement_id, status, result, error_message, processing_time_ms,"
                        " processed_at, created_at, outcome, http_status, detail FROM acknowledgement"
                        " WHERE instruction_id = ? ORDER BY seq",
                        (iid,),
                    )
                ]
                item["history"] = [
                    {"at": h["at"], "event": h["event"], **json.loads(h["detail"])}
                    for h in conn.execute(
                        "SELECT at, event, detail FROM instruction_history WHERE instruction_id = ? ORDER"
                        " BY seq",
                        (iid,),
                    )
                ]
                out.append(item)
        return out

    # -- acknowledgements ------------------------------------------------------------------------------------

    def acknowledge(
        self, agent_id: str, session_id: str, instruction_id: str, ack: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply an acknowledgement and return SmartEM's success body; raise :class:`Rejected` (with the
        status of section 7) otherwise. The attempt is recorded either way."""
        return acknowledge_instruction(self._db, self._compat, agent_id, session_id, instruction_id, ack)

    # -- heartbeats and logs ---------------------------------------------------------------------------------

    def heartbeat(self, agent_id: str, session_id: str) -> dict[str, Any]:
        """An agent heartbeat: needs an active connection of this agent on this session (else 404)."""
        now = iso(utcnow())
        with self._db.tx() as conn:
            row = conn.execute(
                "SELECT connection_id FROM agent_connection WHERE agent_id = ? AND session_id = ?"
                " AND status = 'active' ORDER BY created_at DESC",
                (agent_id, session_id),
            ).fetchone()
            if row is None:
                raise NotFound("No active connection found for agent and session")
            conn.execute(
                "UPDATE agent_connection SET last_heartbeat_at = ? WHERE connection_id = ?",
                (now, row["connection_id"]),
            )
            conn.execute(
                "UPDATE agent_session SET last_activity_at = ? WHERE session_id = ?", (now, session_id)
            )
            conn.execute(
                "INSERT INTO heartbeat (agent_id, session_id, connection_id, received_at) VALUES (?, ?, ?,"
                " ?)",
                (agent_id, session_id, row["connection_id"], now),
            )
        return {
            "status": "success",
            "agent_id": agent_id,
            "session_id": session_id,
            "heartbeat_timestamp": now,
            "connection_id": row["connection_id"],
        }

    def heartbeats(self, *, session_id: str | None = None) -> list[dict[str, Any]]:
        """Heartbeats received, oldest first."""
        where, args = ("WHERE session_id = ?", (session_id,)) if session_id else ("", ())
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT agent_id, session_id, connection_id, received_at FROM heartbeat {where} ORDER BY"
                f" seq",
                args,
            ).fetchall()
        return [dict(r) for r in rows]

    def check_session_owner(self, agent_id: str, session_id: str) -> None:
        """404 for an unknown session, 403 when it belongs to another agent (log endpoint rules)."""
        session = self.get_session(session_id)
        if session is None:
            raise NotFound(f"Session {session_id} not found")
        if session["agent_id"] != agent_id:
            raise Forbidden(f"Session {session_id} does not belong to agent {agent_id}")

    def store_logs(self, agent_id: str, session_id: str, records: list[dict[str, Any]]) -> int:
        """Store log records (the caller bounds their number) and return how many were stored."""
        self.check_session_owner(agent_id, session_id)
        now = iso(utcnow())
        with self._db.tx() as conn:
            conn.executemany(
                "INSERT INTO agent_log (agent_id, session_id, timestamp, level, logger_name, message,"
                " created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (agent_id, session_id, r["timestamp"], r["level"], r["logger_name"], r["message"], now)
                    for r in records
                ],
            )
        return len(records)

    def logs(
        self, *, agent_id: str | None = None, session_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored log records, oldest first, at most ``limit``."""
        clauses, args = [], []
        if agent_id is not None:
            clauses.append("agent_id = ?")
            args.append(agent_id)
        if session_id is not None:
            clauses.append("session_id = ?")
            args.append(session_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT agent_id, session_id, timestamp, level, logger_name, message, created_at FROM"
                f" agent_log"
                f" {where} ORDER BY seq LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [dict(r) for r in rows]


__all__ = ["AgentStore"]
