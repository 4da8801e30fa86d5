"""Acknowledgements from the journal: retries, "already acknowledged", give-up, connection gating, resync
hook.

The backend is an ``httpx.MockTransport`` behind the real ``AsyncSmartEMAPIClient``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent.instructions.acks import AckDispatcher, ApiAckSender
from agent.instructions.config import ExecutorConfig
from agent.instructions.journal import InstructionJournal
from agent.instructions.models import Lane, Outcome, ReceivedInstruction
from agent.state.database import Database, open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy

CONFIG = ExecutorConfig(ack_initial_delay_s=0.01, ack_max_delay_s=0.02, ack_max_attempts=3)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path)
    yield database
    database.close()


def finished(journal: InstructionJournal, iid: str, outcome: Outcome) -> None:
    journal.record(ReceivedInstruction(instruction_id=iid, instruction_type="t"), Lane.QUERY)
    journal.claim_next(Lane.QUERY)
    journal.finish(iid, outcome, json.dumps(outcome.result) if outcome.result else None, 7)


def backend(
    responses: Callable[[int, dict[str, object]], httpx.Response], seen: list[dict[str, object]]
) -> AsyncSmartEMAPIClient:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"path": request.url.path, **body})
        return responses(len(seen), body)

    return AsyncSmartEMAPIClient(
        "http://backend.test", transport=httpx.MockTransport(handler), retry=RetryPolicy.disabled()
    )


def ok(n: int, body: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "instruction_id": "x"})


async def test_sends_only_smartem_fields_and_confirms(db: Database) -> None:
    journal = InstructionJournal(db)
    finished(journal, "a", Outcome.declined("nope", hint=1))
    seen: list[dict[str, object]] = []
    client = backend(ok, seen)
    dispatcher = AckDispatcher(CONFIG, journal, ApiAckSender(client, "agent", "sess"))
    assert await dispatcher.send_due() == 1
    await client.aclose()
    assert seen[0]["path"] == "/agent/agent/session/sess/instructions/a/ack"
    assert set(seen[0]) <= {"path", "status", "result", "error_message", "processing_time_ms", "processed_at"}
    assert seen[0]["status"] == "declined"
    assert json.loads(str(seen[0]["result"])) == {
        "reason": "nope",
        "hint": 1,
    }
    row = journal.get("a")
    assert row is not None
    assert row.ack_state == "confirmed"
    assert await dispatcher.send_due() == 0  # nothing is sent twice


async def test_repeated_ack_answer_counts_as_confirmed(db: Database) -> None:
    journal = InstructionJournal(db)
    finished(journal, "a", Outcome.processed({"ok": True}))
    seen: list[dict[str, object]] = []

    def refuse(n: int, body: dict[str, object]) -> httpx.Response:
        return httpx.Response(400, json={"detail": "Instruction cannot be acknowledged (invalid status)"})

    client = backend(refuse, seen)
    dispatcher = AckDispatcher(CONFIG, journal, ApiAckSender(client, "agent", "sess"))
    assert await dispatcher.send_due() == 1
    await client.aclose()
    row = journal.get("a")
    assert row is not None
    assert row.ack_state == "confirmed"


async def test_retries_then_gives_up_and_asks_for_resync(db: Database) -> None:
    journal = InstructionJournal(db)
    finished(journal, "a", Outcome.processed({}))
    seen: list[dict[str, object]] = []
    resyncs: list[int] = []

    def crash(n: int, body: dict[str, object]) -> httpx.Response:
        return httpx.Response(500, json={"detail": "Internal server error"})

    client = backend(crash, seen)
    dispatcher = AckDispatcher(
        CONFIG, journal, ApiAckSender(client, "agent", "sess"), on_refused=lambda: resyncs.append(1)
    )
    for _ in range(3):
        await dispatcher.send_due()
        journal.rearm_acks()
    await client.aclose()
    row = journal.get("a")
    assert row is not None
    assert row.ack_state == "gave_up"
    assert row.ack_attempts == 3
    assert len(seen) == 3
    assert len(resyncs) == 3
    assert dispatcher.given_up == 1
    # A redelivery of the instruction re-arms the ack with a fresh budget.
    journal.record(ReceivedInstruction(instruction_id="a", instruction_type="t"), Lane.QUERY)
    assert [a.attempts for a in journal.due_acks()] == [0]


async def test_nothing_is_sent_while_disconnected(db: Database) -> None:
    journal = InstructionJournal(db)
    finished(journal, "a", Outcome.processed({}))
    seen: list[dict[str, object]] = []
    connected = False
    client = backend(ok, seen)
    dispatcher = AckDispatcher(
        CONFIG, journal, ApiAckSender(client, "agent", "sess"), is_connected=lambda: connected
    )
    assert await dispatcher.send_due() == 0
    assert seen == []
    connected = True
    dispatcher.on_connected()
    assert await dispatcher.send_due() == 1
    await client.aclose()


async def test_unprocessable_ack_is_given_up_at_once(db: Database) -> None:
    journal = InstructionJournal(db)
    finished(journal, "a", Outcome.processed({}))
    seen: list[dict[str, object]] = []

    def reject(n: int, body: dict[str, object]) -> httpx.Response:
        return httpx.Response(422, json={"detail": [{"type": "extra_forbidden"}]})

    client = backend(reject, seen)
    dispatcher = AckDispatcher(CONFIG, journal, ApiAckSender(client, "agent", "sess"))
    await dispatcher.send_due()
    await client.aclose()
    row = journal.get("a")
    assert row is not None
    assert row.ack_state == "gave_up"
    assert len(seen) == 1


def test_one_already_acknowledged_rule_for_journal_acks_and_the_sse_client() -> None:
    from agent.instructions import acks
    from backend_client import acks as client_acks
    from backend_client.errors import ConflictError, RequestRejectedError, ServerError

    assert acks.is_already_acknowledged is client_acks.is_already_acknowledged
    repeated = RequestRejectedError("x", status_code=400, detail="cannot be acknowledged (invalid status)")
    assert client_acks.is_already_acknowledged(repeated)
    assert client_acks.classify_ack_failure(repeated) == "already"
    assert client_acks.is_already_acknowledged(ConflictError("already acknowledged", status_code=409))
    assert not client_acks.is_already_acknowledged(ServerError("x", status_code=500, detail="already"))
