"""Handler registry, payload models, runtime config and docs, with the in-process simulator as the device."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agent.instructions as pkg
from agent.devices.semphony import SemphonyClient
from agent.devices.simulator.config import SimulatorConfig
from agent.instructions.config import ExecutorConfig, RuntimeConfig, RuntimeSettings
from agent.instructions.context import DeviceHandle, HandlerContext
from agent.instructions.executor import Executor
from agent.instructions.handlers import default_registry
from agent.instructions.journal import InstructionJournal
from agent.instructions.models import AckStatus, JournalEntry, Lane, Outcome
from agent.instructions.runner import DeviceOptions, open_imaging_device
from agent.state.database import open_database

REPO = Path(__file__).resolve().parents[3]


class FakeIngest:
    """A minimal IngestIntrospection implementation (the protocol is structural)."""

    def snapshot(self) -> dict[str, Any]:
        return {"outbox_depth": 3}

    def datastore_info(self) -> dict[str, Any]:
        return {"grids": 1}

    def metrics_info(self) -> dict[str, Any]:
        return {"posted": 10}

    def error_info(self) -> dict[str, Any]:
        return {"transient_api": 2}

    def orphan_info(self) -> dict[str, Any]:
        return {"micrograph": 4}


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[Executor]:
    client = SemphonyClient.simulated(SimulatorConfig(time_factor=0.0))
    handle = DeviceHandle(lambda: open_imaging_device(client, DeviceOptions(backend="simulator")))
    db = open_database(tmp_path)
    context = HandlerContext(
        state_dir=tmp_path / "state",
        device=handle,
        introspection=FakeIngest(),
        journal=InstructionJournal(db),
    )
    yield Executor(ExecutorConfig(), InstructionJournal(db), default_registry(), context)
    handle.close()
    client.close()
    db.close()


def is_file_under(path: str, root: Path) -> bool:
    return Path(path).is_file() and Path(path).resolve().is_relative_to(root.resolve())


def entry(itype: str, payload: Any) -> JournalEntry:
    return JournalEntry(
        instruction_id="i-1", instruction_type=itype, payload=payload, priority="normal", sequence_number=None,
        created_at=None, expires_at=None, lane=Lane.DEVICE, state="executing", deliveries=1, outcome=None,
        result_json=None, error_message=None, processing_time_ms=None, ack_state="none", ack_attempts=0,
        finished_at=None,
    )  # fmt: skip


async def run(executor: Executor, itype: str, payload: Any = None) -> Outcome:
    outcome = await executor.execute(entry(itype, payload))
    if outcome.result is not None:
        json.dumps(outcome.result)  # results are JSON-serialisable
    return outcome


async def test_every_type_has_a_strict_payload_model() -> None:
    registry = default_registry()
    assert len(registry) >= 36
    for spec in registry:
        assert spec.payload_model.model_config.get("extra") == "forbid", spec.instruction_type
        assert (spec.lane is Lane.QUERY) == spec.instruction_type.startswith("agent."), spec.instruction_type


def test_every_type_is_documented() -> None:
    docs = (REPO / "docs" / "instructions.md").read_text(encoding="utf-8")
    for spec in default_registry():
        assert f"`{spec.instruction_type}`" in docs, spec.instruction_type
        assert f"`{spec.instruction_type}`" in (pkg.__doc__ or ""), spec.instruction_type


def test_public_api_is_exported() -> None:
    assert sorted(pkg.__all__) == pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


async def test_agent_handlers_read_the_ingest_introspection(executor: Executor) -> None:
    outcome = await run(executor, "agent.status.request", {})
    assert outcome.status is AckStatus.PROCESSED
    assert outcome.result is not None
    assert outcome.result["ingest"] == {"outbox_depth": 3}
    for name, expected in (("datastore", {"grids": 1}), ("orphans", {"micrograph": 4})):
        outcome = await run(executor, f"agent.info.{name}")
        assert outcome.result == {"source": "ingest", name: expected}
    outcome = await run(executor, "agent.info.errors")
    assert outcome.result is not None
    assert outcome.result["recent_instruction_failures"] == []


async def test_config_update_validates_and_notifies() -> None:
    runtime = RuntimeConfig()
    seen: list[dict[str, Any]] = []
    unsubscribe = runtime.subscribe(lambda settings, changed: seen.append(changed))
    assert runtime.update({"log_level": "DEBUG"}) == {"log_level": "DEBUG"}
    with pytest.raises(ValueError, match="status_interval_s"):
        runtime.update({"status_interval_s": 0.01})
    assert runtime.settings.status_interval_s == RuntimeSettings().status_interval_s
    unsubscribe()
    runtime.update({"log_level": "INFO"})
    assert seen == [{"log_level": "DEBUG"}]
    assert RuntimeConfig.allowed_keys() == ["heartbeat_interval_s", "log_level", "status_interval_s"]


async def test_config_update_outcomes(executor: Executor) -> None:
    outcome = await run(executor, "agent.config.update", {"log_interval": 2.5})
    assert outcome.status is AckStatus.PROCESSED
    assert outcome.result is not None
    assert outcome.result["changed"] == {"status_interval_s": 2.5}
    for payload in ({}, {"nope": 1}, {"log_level": "LOUD"}, {"log_interval": 2, "status_interval_s": 3}):
        outcome = await run(executor, "agent.config.update", payload)
        assert outcome.status is AckStatus.DECLINED, payload
    outcome = await run(executor, "agent.config.update", {"nope": 1})
    assert "allowed keys" in (outcome.error_message or "")


async def test_device_handlers_on_the_simulator(executor: Executor, tmp_path: Path) -> None:
    outcome = await run(
        executor, "microscope.control.move_stage", {"stage_position": {"x": 2, "y": 1}, "unit": "mm"}
    )
    assert outcome.status is AckStatus.PROCESSED
    assert outcome.result is not None
    assert outcome.result["target_mm"] == {"x": 2.0, "y": 1.0, "z": None}
    outcome = await run(
        executor, "microscope.control.take_image", {"image_params": {"width": 32, "height": 32}}
    )
    assert outcome.status is AckStatus.PROCESSED
    assert outcome.result is not None
    assert is_file_under(outcome.result["path"], tmp_path / "state")
    outcome = await run(executor, "sem.geometry.get", {"name": "tilt", "index": 1})
    assert outcome.status is AckStatus.DECLINED
    assert "exactly one" in (outcome.error_message or "")
    outcome = await run(executor, "sem.set_focus_params", {})
    assert outcome.status is AckStatus.DECLINED
    assert "at least one" in (outcome.error_message or "")
    outcome = await run(executor, "sem.stage.move_to", {"x": 0, "y": 0, "t": 5})
    assert outcome.status is AckStatus.DECLINED
    assert "move_by" in (outcome.error_message or "")
    outcome = await run(executor, "sem.geometry.set", {"name": "no such geometry", "x": 1})
    assert outcome.status is AckStatus.FAILED
    assert "device error" in (outcome.error_message or "")
    outcome = await run(executor, "microscope.control.skip_gridsquares", {"gridsquare_ids": [1]})
    assert outcome.status is AckStatus.DECLINED
    assert "decision service" in (outcome.error_message or "")
