"""The executor: outcome rules, time limits, the two lanes and draining, with a small registry of test
handlers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException
from agent.instructions.config import ExecutorConfig
from agent.instructions.context import Call, HandlerContext
from agent.instructions.errors import InstructionDeclined
from agent.instructions.executor import Executor
from agent.instructions.journal import INTERRUPTED_MESSAGE, InstructionJournal
from agent.instructions.models import AckStatus, Lane, ReceivedInstruction
from agent.instructions.registry import HandlerRegistry, HandlerSpec
from agent.state.database import open_database


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sleep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0)
    tag: str = ""


class Probe:
    """Records what the handlers saw, to check ordering and concurrency."""

    def __init__(self) -> None:
        self.active_device = 0
        self.max_device = 0
        self.calls: list[str] = []
        self.query_done_while_device_busy = False


def build_registry(probe: Probe) -> HandlerRegistry:
    reg = HandlerRegistry()

    @reg.add("test.device.sleep", Sleep, Lane.DEVICE, "sleeps in the device lane")
    async def device_sleep(p: Sleep, call: Call) -> dict[str, Any]:
        probe.active_device += 1
        probe.max_device = max(probe.max_device, probe.active_device)
        probe.calls.append(p.tag or call.instruction_id)
        try:
            await asyncio.sleep(p.seconds)
        finally:
            probe.active_device -= 1
        return {"slept": p.seconds}

    @reg.add("test.query", Empty, Lane.QUERY, "answers at once")
    async def query(_: Empty, call: Call) -> dict[str, Any]:
        if probe.active_device:
            probe.query_done_while_device_busy = True
        return {"id": call.instruction_id}

    @reg.add("test.guardrail", Empty, Lane.DEVICE, "violates a guardrail")
    async def guardrail(_: Empty, call: Call) -> dict[str, Any]:
        raise SemphonyGuardrailException(
            "stage_soft_limits", {"axis": "x", "requested": 99.0, "limit": [-40, 40]}
        )

    @reg.add("test.device_error", Empty, Lane.DEVICE, "device fails")
    async def device_error(_: Empty, call: Call) -> dict[str, Any]:
        raise SemphonyApiError("scan failed", status_code=502)

    @reg.add("test.decline", Empty, Lane.QUERY, "declines")
    async def decline(_: Empty, call: Call) -> dict[str, Any]:
        raise InstructionDeclined("not today", hint="tomorrow")

    @reg.add("test.bug", Empty, Lane.QUERY, "raises")
    async def bug(_: Empty, call: Call) -> dict[str, Any]:
        raise KeyError("oops")

    @reg.add("test.unserialisable", Empty, Lane.QUERY, "bad result")
    async def unserialisable(_: Empty, call: Call) -> dict[str, Any]:
        return {"value": float("nan")}

    return reg


class Harness:
    def __init__(self, tmp_path: Path, config: ExecutorConfig) -> None:
        self.db = open_database(tmp_path)
        self.journal = InstructionJournal(self.db)
        self.probe = Probe()
        self.registry = build_registry(self.probe)
        self.finished: asyncio.Queue[str] = asyncio.Queue()
        self.executor = Executor(
            config,
            self.journal,
            self.registry,
            HandlerContext(state_dir=tmp_path),
            on_finished=self.finished.put_nowait,
        )

    def submit(self, iid: str, itype: str, payload: Any = None, **kw: Any) -> None:
        instruction = ReceivedInstruction.from_event(
            {"instruction_id": iid, "instruction_type": itype, "payload": payload} | kw
        )
        lane = self.registry.lane_of(itype)
        self.journal.record(instruction, lane)
        self.executor.notify(lane)

    async def wait(self, n: int) -> list[str]:
        return [await asyncio.wait_for(self.finished.get(), 10.0) for _ in range(n)]

    def outcome(self, iid: str) -> tuple[AckStatus | None, dict[str, Any], str | None]:
        row = self.journal.get(iid)
        assert row is not None
        return row.outcome, json.loads(row.result_json or "null") or {}, row.error_message


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(
        tmp_path,
        ExecutorConfig(
            timeouts_s={"test.device.sleep": 0.5},
            drain_timeout_s=0.2,
            enabled_types=["test.*", "agent.*"],
        ),
    )
    await h.executor.start()
    yield h
    await h.executor.stop()
    h.db.close()


async def test_outcome_rules(harness: Harness) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    harness.submit("expired", "test.query", {}, expires_at=past)
    harness.submit("unknown", "test.nope", {})
    harness.submit("invalid", "test.device.sleep", {"seconds": -1, "extra": 1})
    harness.submit("guard", "test.guardrail", {})
    harness.submit("deverr", "test.device_error", None)
    harness.submit("declined", "test.decline", {})
    harness.submit("bug", "test.bug", {})
    harness.submit("nan", "test.unserialisable", {})
    harness.submit("ok", "test.query", {})
    await harness.wait(9)

    status, result, msg = harness.outcome("expired")
    assert status is AckStatus.DECLINED
    assert result["expired"] is True
    assert "expired" in (msg or "")
    status, result, msg = harness.outcome("unknown")
    assert status is AckStatus.DECLINED
    assert "test.nope" in (msg or "")
    assert "test.query" in result["known_types"]
    status, _, msg = harness.outcome("invalid")
    assert status is AckStatus.DECLINED
    assert "seconds: Input should be greater than or equal to 0" in (msg or "")
    assert "extra: Extra inputs are not permitted" in (msg or "")
    status, result, msg = harness.outcome("guard")
    assert status is AckStatus.DECLINED
    assert result["guardrail_type"] == "stage_soft_limits"
    assert result["details"]["requested"] == 99.0
    assert "stage_soft_limits" in (msg or "")
    status, result, msg = harness.outcome("deverr")
    assert status is AckStatus.FAILED
    assert "scan failed" in (msg or "")
    assert result["status_code"] == 502
    status, result, msg = harness.outcome("declined")
    assert status is AckStatus.DECLINED
    assert result == {"reason": "not today", "hint": "tomorrow"}
    status, _, msg = harness.outcome("bug")
    assert status is AckStatus.FAILED
    assert "KeyError" in (msg or "")
    status, _, msg = harness.outcome("nan")
    assert status is AckStatus.FAILED
    assert "JSON" in (msg or "")
    status, result, _ = harness.outcome("ok")
    assert status is AckStatus.PROCESSED
    assert result == {"id": "ok"}
    assert harness.probe.calls == []  # neither the expired nor the invalid one reached a handler


async def test_time_limit_fails_the_instruction(harness: Harness) -> None:
    harness.submit("slow", "test.device.sleep", {"seconds": 5})
    await harness.wait(1)
    status, result, msg = harness.outcome("slow")
    assert status is AckStatus.FAILED
    assert "timed out after 0.5 s" in (msg or "")
    assert result["timeout_s"] == 0.5


async def test_device_lane_is_serial_and_queries_do_not_wait(harness: Harness) -> None:
    for i in range(4):
        harness.submit(f"d{i}", "test.device.sleep", {"seconds": 0.1, "tag": f"d{i}"})
    # Submit the query once a device action is running, so the check does not depend on scheduling luck.
    for _ in range(500):
        if harness.probe.active_device:
            break
        await asyncio.sleep(0.005)
    harness.submit("q", "test.query", {})
    done = await harness.wait(5)
    assert harness.probe.max_device == 1
    assert harness.probe.query_done_while_device_busy
    assert done.index("q") < done.index("d3")
    assert harness.probe.calls == ["d0", "d1", "d2", "d3"]


async def test_priority_order_in_the_device_lane(tmp_path: Path) -> None:
    h = Harness(tmp_path, ExecutorConfig(enabled_types=["test.*"]))
    # Journal everything before the workers start, as after a reconnect burst.
    h.submit("low", "test.device.sleep", {"seconds": 0, "tag": "low"}, priority="low")
    h.submit("normal", "test.device.sleep", {"seconds": 0, "tag": "normal"})
    h.submit("critical", "test.device.sleep", {"seconds": 0, "tag": "critical"}, priority="critical")
    h.submit("high", "test.device.sleep", {"seconds": 0, "tag": "high"}, priority="high")
    await h.executor.start()
    await h.wait(4)
    await h.executor.stop()
    h.db.close()
    assert h.probe.calls == ["critical", "high", "normal", "low"]


async def test_stop_interrupts_what_does_not_drain(harness: Harness) -> None:
    harness.submit("long", "test.device.sleep", {"seconds": 0.4})
    for _ in range(500):
        if harness.executor.in_flight:
            break
        await asyncio.sleep(0.01)
    await harness.executor.stop(drain_timeout_s=0.05)
    status, result, msg = harness.outcome("long")
    assert status is AckStatus.FAILED
    assert msg == INTERRUPTED_MESSAGE
    assert result["interrupted"] is True


async def test_types_outside_the_allow_list_are_declined_without_running(tmp_path: Path) -> None:
    h = Harness(tmp_path, ExecutorConfig(enabled_types=["test.query"]))
    await h.executor.start()
    try:
        h.submit("off", "test.device_error", {})
        h.submit("on", "test.query", {})
        await h.wait(2)
        status, _result, msg = h.outcome("off")
        assert status == "declined"
        assert msg is not None
        assert "not enabled" in msg
        assert h.outcome("on")[0] == "processed"
    finally:
        await h.executor.stop()
        h.db.close()


def test_default_allow_list() -> None:
    config = ExecutorConfig()
    assert config.is_enabled("agent.status.request")
    assert config.is_enabled("sem.stage.move_to")
    assert config.is_enabled("microscope.control.move_stage")
    assert not config.is_enabled("test.instruction")


def test_payload_models_must_forbid_extra() -> None:
    class Loose(BaseModel):
        x: int = 0

    async def handler(p: Loose, call: Call) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="extra='forbid'"):
        HandlerSpec("t", Loose, handler, Lane.QUERY, "")
