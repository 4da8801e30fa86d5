"""The instruction journal: dedupe, ordering, crash recovery and the ack outbox, on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.instructions.journal import INTERRUPTED_MESSAGE, InstructionJournal, RecordResult
from agent.instructions.models import AckStatus, Lane, Outcome, ReceivedInstruction
from agent.state.database import Database, open_database


def instr(iid: str, *, priority: str = "normal", seq: int | None = None, **kw: object) -> ReceivedInstruction:
    return ReceivedInstruction.from_event(
        {
            "instruction_id": iid,
            "instruction_type": "agent.status.request",
            "payload": {},
            "priority": priority,
        }
        | ({"sequence_number": seq} if seq is not None else {})
        | kw
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path)
    yield database
    database.close()


def test_record_is_idempotent_and_rearms_finished_acks(db: Database) -> None:
    journal = InstructionJournal(db)
    assert journal.record(instr("a"), Lane.QUERY) is RecordResult.NEW
    assert journal.record(instr("a"), Lane.QUERY) is RecordResult.IN_PROGRESS
    entry = journal.claim_next(Lane.QUERY)
    assert entry is not None
    assert entry.instruction_id == "a"
    assert journal.claim_next(Lane.QUERY) is None
    journal.finish("a", Outcome.processed({"ok": True}), '{"ok": true}', 5)
    journal.ack_confirmed("a")
    assert journal.due_acks() == []
    assert journal.record(instr("a"), Lane.QUERY) is RecordResult.REACK
    due = journal.due_acks()
    assert [d.instruction_id for d in due] == ["a"]
    assert due[0].status is AckStatus.PROCESSED
    assert due[0].result == '{"ok": true}'
    row = journal.get("a")
    assert row is not None
    assert row.deliveries == 3
    assert row.state == "done"
    assert journal.stats()["redeliveries"] == 2


def test_claim_order_priority_then_sequence_then_arrival(db: Database) -> None:
    journal = InstructionJournal(db)
    arrivals = [
        instr("n-unnumbered"),
        instr("low", priority="low", seq=1),
        instr("n2", seq=2),
        instr("crit", priority="critical", seq=9),
        instr("n1", seq=1),
        instr("high", priority="HIGH"),
        instr("weird", priority="urgent-ish", seq=3),
    ]
    for i in arrivals:
        journal.record(i, Lane.DEVICE)
    order = []
    while (entry := journal.claim_next(Lane.DEVICE)) is not None:
        order.append(entry.instruction_id)
    # Unknown priority strings rank as normal; unnumbered instructions go after numbered ones of their rank.
    assert order == ["crit", "high", "n1", "n2", "weird", "n-unnumbered", "low"]


def test_lanes_are_separate_queues(db: Database) -> None:
    journal = InstructionJournal(db)
    journal.record(instr("d"), Lane.DEVICE)
    journal.record(instr("q"), Lane.QUERY)
    assert journal.has_queued(Lane.DEVICE)
    assert journal.has_queued(Lane.QUERY)
    q = journal.claim_next(Lane.QUERY)
    assert q is not None
    assert q.instruction_id == "q"
    assert not journal.has_queued(Lane.QUERY)


def test_restart_recovers_executing_as_interrupted_and_keeps_queued(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    journal = InstructionJournal(db)
    journal.record(instr("running"), Lane.DEVICE)
    journal.record(instr("waiting"), Lane.DEVICE)
    assert journal.claim_next(Lane.DEVICE) is not None  # "running" is executing when the process dies
    db.close()

    db2 = open_database(tmp_path)
    journal2 = InstructionJournal(db2)
    assert journal2.recover_interrupted() == ["running"]
    row = journal2.get("running")
    assert row is not None
    assert row.outcome is AckStatus.FAILED
    assert row.error_message == INTERRUPTED_MESSAGE
    assert json.loads(row.result_json or "{}")["interrupted"] is True
    assert [a.instruction_id for a in journal2.due_acks()] == ["running"]
    nxt = journal2.claim_next(Lane.DEVICE)
    assert nxt is not None
    assert nxt.instruction_id == "waiting"
    # A replay of the interrupted instruction only re-arms its ack: it is never queued again.
    assert journal2.record(instr("running"), Lane.DEVICE) is RecordResult.REACK
    db2.close()


def test_ack_failures_back_off_count_only_when_connected_and_give_up(db: Database) -> None:
    journal = InstructionJournal(db)
    journal.record(instr("a"), Lane.QUERY)
    journal.claim_next(Lane.QUERY)
    journal.finish("a", Outcome.declined("nope"), '{"reason": "nope"}', 1, now=100.0)
    assert [a.instruction_id for a in journal.due_acks(now=100.0)] == ["a"]
    journal.ack_failed("a", "not connected", retry_at=200.0, counted=False)
    assert journal.due_acks(now=150.0) == []
    assert journal.next_ack_time() == 200.0
    assert journal.due_acks(now=200.0)[0].attempts == 0
    journal.ack_failed("a", "500", retry_at=300.0)
    assert journal.rearm_acks(now=250.0) == 1
    assert journal.due_acks(now=250.0)[0].attempts == 1
    journal.ack_failed("a", "500 again", retry_at=None)
    row = journal.get("a")
    assert row is not None
    assert row.ack_state == "gave_up"
    assert journal.due_acks(now=10_000.0) == []
    assert journal.next_ack_time() is None


def test_prune_keeps_unacknowledged_rows(db: Database) -> None:
    journal = InstructionJournal(db)
    for iid in ("old-acked", "old-unacked", "new-acked"):
        journal.record(instr(iid), Lane.QUERY)
        journal.claim_next(Lane.QUERY)
    journal.finish("old-acked", Outcome.processed({}), "{}", 1, now=0.0)
    journal.finish("old-unacked", Outcome.processed({}), "{}", 1, now=0.0)
    journal.finish("new-acked", Outcome.processed({}), "{}", 1, now=1000.0)
    journal.ack_confirmed("old-acked")
    journal.ack_confirmed("new-acked")
    assert journal.prune(500.0, now=1000.0) == 1
    assert journal.get("old-acked") is None
    assert journal.get("old-unacked") is not None
    assert journal.get("new-acked") is not None


def test_received_instruction_parsing_is_lenient_but_needs_an_id() -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    parsed = ReceivedInstruction.from_event(
        json.dumps(
            {
                "type": "instruction",
                "instruction_id": "x",
                "instruction_type": "sem.vent",
                "payload": [1, 2],
                "priority": None,
                "metadata": None,
                "created_at": "2026-01-01T00:00:00",
                "expires_at": expires.replace(tzinfo=None).isoformat(),
                "unknown_extra": 1,
            }
        )
    )
    assert parsed.priority == "normal"
    assert parsed.metadata == {}
    assert parsed.payload == [1, 2]
    assert parsed.created_at is not None
    assert parsed.created_at.tzinfo is not None
    assert parsed.expires_at is not None
    assert abs((parsed.expires_at - expires).total_seconds()) < 1e-3
    with pytest.raises(ValueError, match="instruction"):
        ReceivedInstruction.from_event({"instruction_type": "sem.vent"})
    with pytest.raises(ValueError, match="not an object"):
        ReceivedInstruction.from_event("[1]")
