"""The durable instruction journal (SQLite): the executor's queue, its dedupe memory and its ack outbox.

Every instruction is written here when it arrives, before anything runs. Its row then moves through
``queued -> executing -> done``; ``done`` rows carry the one final outcome and an ack state
``pending -> confirmed`` (or ``gave_up`` after a capped number of failures while connected). Because the row
exists before execution starts and ``executing`` is committed before the handler is called:

* a redelivered or replayed instruction id finds its row and is never executed again (a finished one is
  re-acknowledged with its recorded outcome);
* after a crash, ``executing`` rows are finished as ``failed`` ("interrupted") instead of being re-run, and
  ``queued`` rows, which never started, simply run;
* acknowledgements survive reconnects and restarts: pending acks are re-sent from here, since SmartEM does not
  re-send an instruction it already sent.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from agent.instructions.models import (
    AckStatus,
    JournalEntry,
    Lane,
    Outcome,
    ReceivedInstruction,
    priority_rank,
)
from agent.state.database import Database

SCHEMA_COMPONENT = "instruction_journal"
SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS instruction_journal (
    instruction_id TEXT PRIMARY KEY,
    instruction_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    sequence_number INTEGER,
    created_at TEXT,
    expires_at REAL,
    metadata TEXT NOT NULL,
    lane TEXT NOT NULL,
    received_seq INTEGER NOT NULL,
    received_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    outcome TEXT,
    result TEXT,
    error_message TEXT,
    processing_time_ms INTEGER,
    ack_state TEXT NOT NULL DEFAULT 'none',
    ack_attempts INTEGER NOT NULL DEFAULT 0,
    ack_last_error TEXT,
    next_ack_at REAL,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS instruction_journal_queue
    ON instruction_journal(state, lane, priority_rank, sequence_number, received_seq);
CREATE INDEX IF NOT EXISTS instruction_journal_acks ON instruction_journal(ack_state, next_ack_at)
"""

INTERRUPTED_MESSAGE = "interrupted: the agent stopped while this instruction was executing; it was not re-run"


class RecordResult(StrEnum):
    """What :meth:`InstructionJournal.record` did with an arriving instruction."""

    NEW = "new"
    """First sighting: queued for execution."""
    IN_PROGRESS = "in_progress"
    """Already queued or executing: nothing to do, its ack will follow."""
    REACK = "reack"
    """Already finished: its recorded outcome is armed for another acknowledgement."""


@dataclass(frozen=True)
class AckAttempt:
    """A due acknowledgement: everything needed to send it without re-reading the row."""

    instruction_id: str
    status: AckStatus
    result: str | None
    error_message: str | None
    processing_time_ms: int | None
    finished_at: datetime | None
    attempts: int


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class InstructionJournal:
    """Instruction journal over the agent's state :class:`~agent.state.database.Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(SCHEMA_COMPONENT, SCHEMA_VERSION, _DDL)

    # -- arrival -------------------------------------------------------------------------------------------

    def record(
        self, instruction: ReceivedInstruction, lane: Lane, *, now: float | None = None
    ) -> RecordResult:
        """Journal an arriving instruction (idempotent by instruction id); see :class:`RecordResult`."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT state FROM instruction_journal WHERE instruction_id = ?",
                (instruction.instruction_id,),
            ).fetchone()
            if row is not None:
                if row["state"] != "done":
                    # A redelivery carries the backend's current expiry (SmartEM extends it on each reset):
                    # the instruction is still wanted, so a queued one must not be declined on the old expiry.
                    conn.execute(
                        "UPDATE instruction_journal SET deliveries = deliveries + 1, "
                        "expires_at = CASE WHEN state = 'queued' THEN ? ELSE expires_at END "
                        "WHERE instruction_id = ?",
                        (
                            instruction.expires_at.timestamp() if instruction.expires_at else None,
                            instruction.instruction_id,
                        ),
                    )
                    return RecordResult.IN_PROGRESS
                # The backend sent it again, so it has not stored our ack: send the recorded outcome again,
                # with a fresh attempt budget (a SmartEM redelivery makes a new ack acceptable again).
                conn.execute(
                    "UPDATE instruction_journal SET deliveries = deliveries + 1, ack_state = 'pending', "
                    "ack_attempts = 0, next_ack_at = ? WHERE instruction_id = ?",
                    (now, instruction.instruction_id),
                )
                return RecordResult.REACK
            seq = conn.execute(
                "SELECT COALESCE(MAX(received_seq), 0) + 1 FROM instruction_journal"
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO instruction_journal (instruction_id, instruction_type, payload, priority, "
                "priority_rank, sequence_number, created_at, expires_at, metadata, lane, received_seq, "
                "received_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (
                    instruction.instruction_id,
                    instruction.instruction_type,
                    json.dumps(instruction.payload),
                    instruction.priority,
                    priority_rank(instruction.priority),
                    instruction.sequence_number,
                    instruction.created_at.isoformat() if instruction.created_at else None,
                    instruction.expires_at.timestamp() if instruction.expires_at else None,
                    json.dumps(instruction.metadata),
                    lane.value,
                    seq,
                    now,
                ),
            )
            return RecordResult.NEW

    # -- execution -----------------------------------------------------------------------------------------

    def claim_next(self, lane: Lane, *, now: float | None = None) -> JournalEntry | None:
        """Mark the next queued instruction of ``lane`` as executing and return it (None if the lane is
        empty).

        Order: priority rank (critical > high > normal > low), then sequence number (unnumbered last), then
        arrival order. The ``executing`` state is committed before this returns, so a crash from here on
        leaves a row that restart recovery finishes as interrupted rather than re-running.
        """
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM instruction_journal WHERE state = 'queued' AND lane = ? "
                "ORDER BY priority_rank DESC, sequence_number IS NULL, sequence_number, received_seq LIMIT 1",
                (lane.value,),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE instruction_journal SET state = 'executing', started_at = ? WHERE instruction_id = ?",
                (now, row["instruction_id"]),
            )
            return self._entry(row, state="executing")

    def finish(
        self,
        instruction_id: str,
        outcome: Outcome,
        result_json: str | None,
        processing_time_ms: int,
        *,
        now: float | None = None,
    ) -> None:
        """Record the final outcome and arm its acknowledgement (one transaction)."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE instruction_journal SET state = 'done', finished_at = ?, outcome = ?, result = ?, "
                "error_message = ?, processing_time_ms = ?, ack_state = 'pending', ack_attempts = 0, "
                "next_ack_at = ? WHERE instruction_id = ?",
                (
                    now,
                    outcome.status.value,
                    result_json,
                    outcome.error_message,
                    processing_time_ms,
                    now,
                    instruction_id,
                ),
            )

    def recover_interrupted(self, *, now: float | None = None) -> list[str]:
        """Finish every ``executing`` row as failed "interrupted" (run once at start-up); returns their
        ids."""
        now = time.time() if now is None else now
        result = json.dumps({"error": INTERRUPTED_MESSAGE, "interrupted": True})
        with self._db.transaction() as conn:
            ids = [
                r["instruction_id"]
                for r in conn.execute(
                    "SELECT instruction_id FROM instruction_journal WHERE state = 'executing'"
                )
            ]
            conn.execute(
                "UPDATE instruction_journal SET state = 'done', finished_at = ?, outcome = 'failed', "
                "result = ?, error_message = ?, "
                "processing_time_ms = CAST((? - started_at) * 1000 AS INTEGER), "
                "ack_state = 'pending', ack_attempts = 0, next_ack_at = ? WHERE state = 'executing'",
                (now, result, INTERRUPTED_MESSAGE, now, now),
            )
        return ids

    # -- acknowledgements ----------------------------------------------------------------------------------

    def due_acks(self, *, now: float | None = None, limit: int = 100) -> list[AckAttempt]:
        """Pending acknowledgements whose retry time has come, oldest first."""
        now = time.time() if now is None else now
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT instruction_id, outcome, result, error_message, processing_time_ms, finished_at, "
                "ack_attempts FROM instruction_journal WHERE ack_state = 'pending' AND next_ack_at <= ? "
                "ORDER BY next_ack_at, received_seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            AckAttempt(
                instruction_id=r["instruction_id"],
                status=AckStatus(r["outcome"]),
                result=r["result"],
                error_message=r["error_message"],
                processing_time_ms=r["processing_time_ms"],
                finished_at=_ts(r["finished_at"]),
                attempts=int(r["ack_attempts"]),
            )
            for r in rows
        ]

    def next_ack_time(self) -> float | None:
        """When the earliest pending acknowledgement is due (None if none is pending)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT MIN(next_ack_at) FROM instruction_journal WHERE ack_state = 'pending'"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def ack_confirmed(self, instruction_id: str, *, now: float | None = None) -> None:
        """The backend confirmed the acknowledgement."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE instruction_journal SET ack_state = 'confirmed', acked_at = ?, "
                "ack_attempts = ack_attempts + 1, ack_last_error = NULL, next_ack_at = NULL "
                "WHERE instruction_id = ?",
                (now, instruction_id),
            )

    def ack_failed(
        self, instruction_id: str, error: str, *, retry_at: float | None, counted: bool = True
    ) -> None:
        """An acknowledgement attempt failed: retry at ``retry_at``, or give up when it is None.

        ``counted`` is False for attempts that could not have succeeded (no live stream), so that a long
        outage does not use up the attempt budget.
        """
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE instruction_journal SET ack_attempts = ack_attempts + ?, ack_last_error = ?, "
                "ack_state = ?, next_ack_at = ? WHERE instruction_id = ?",
                (
                    1 if counted else 0,
                    error[:2000],
                    "pending" if retry_at else "gave_up",
                    retry_at,
                    instruction_id,
                ),
            )

    def rearm_acks(self, *, now: float | None = None) -> int:
        """Make every pending acknowledgement due now (after a reconnect); returns how many."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE instruction_journal SET next_ack_at = ? "
                "WHERE ack_state = 'pending' AND next_ack_at > ?",
                (now, now),
            )
            return cur.rowcount

    # -- inspection and housekeeping -----------------------------------------------------------------------

    def get(self, instruction_id: str) -> JournalEntry | None:
        """The journal row of ``instruction_id``."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM instruction_journal WHERE instruction_id = ?", (instruction_id,)
            ).fetchone()
        return None if row is None else self._entry(row)

    def has_queued(self, lane: Lane) -> bool:
        """Whether ``lane`` has work waiting."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM instruction_journal WHERE state = 'queued' AND lane = ? LIMIT 1", (lane.value,)
            ).fetchone()
        return row is not None

    def stats(self) -> dict[str, Any]:
        """Counts by state, outcome and ack state, plus redeliveries seen."""
        with self._db.read() as conn:
            states = dict(
                conn.execute("SELECT state, COUNT(*) FROM instruction_journal GROUP BY state").fetchall()
            )
            outcomes = dict(
                conn.execute(
                    "SELECT outcome, COUNT(*) FROM instruction_journal "
                    "WHERE outcome IS NOT NULL GROUP BY outcome"
                ).fetchall()
            )
            acks = dict(
                conn.execute(
                    "SELECT ack_state, COUNT(*) FROM instruction_journal GROUP BY ack_state"
                ).fetchall()
            )
            redeliveries = conn.execute(
                "SELECT COALESCE(SUM(deliveries - 1), 0) FROM instruction_journal"
            ).fetchone()[0]
            by_type = dict(
                conn.execute(
                    "SELECT instruction_type, COUNT(*) FROM instruction_journal GROUP BY instruction_type"
                ).fetchall()
            )
        return {
            "total": sum(states.values()),
            "by_state": {k: int(v) for k, v in states.items()},
            "by_outcome": {k: int(v) for k, v in outcomes.items()},
            "by_ack_state": {k: int(v) for k, v in acks.items()},
            "by_type": {k: int(v) for k, v in by_type.items()},
            "redeliveries": int(redeliveries),
        }

    def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest failed or declined instructions (for ``agent.info.errors`` without an ingest
        service)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT instruction_id, instruction_type, outcome, error_message, finished_at "
                "FROM instruction_journal WHERE outcome IN ('failed', 'declined') "
                "ORDER BY finished_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                "instruction_id": r["instruction_id"],
                "instruction_type": r["instruction_type"],
                "outcome": r["outcome"],
                "error_message": r["error_message"],
                "finished_at": datetime.fromtimestamp(r["finished_at"], tz=UTC).isoformat()
                if r["finished_at"]
                else None,
            }
            for r in rows
        ]

    def prune(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete acknowledged rows finished more than ``older_than_s`` ago; returns how many."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM instruction_journal WHERE state = 'done' "
                "AND ack_state IN ('confirmed', 'gave_up') AND finished_at < ?",
                (now - older_than_s,),
            )
            return cur.rowcount

    @staticmethod
    def _entry(row: sqlite3.Row, state: str | None = None) -> JournalEntry:
        return JournalEntry(
            instruction_id=row["instruction_id"],
            instruction_type=row["instruction_type"],
            payload=json.loads(row["payload"]),
            priority=row["priority"],
            sequence_number=row["sequence_number"],
            created_at=datetime.fromisoformat(row["created_at"]) if row["created_at"] else None,
            expires_at=_ts(row["expires_at"]),
            lane=Lane(row["lane"]),
            state=state or row["state"],
            deliveries=int(row["deliveries"]),
            outcome=AckStatus(row["outcome"]) if row["outcome"] else None,
            result_json=row["result"],
            error_message=row["error_message"],
            processing_time_ms=row["processing_time_ms"],
            ack_state=row["ack_state"],
            ack_attempts=int(row["ack_attempts"]),
            finished_at=_ts(row["finished_at"]),
        )
