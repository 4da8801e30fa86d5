"""Handler registry, payload models, runtime config and docs, with the in-process simulator as the device."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agent.instructions as pkg
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator_backend import SimulatorBackend
from agent.instructions.config import (
    ExecutorConfig,
    NotApplied,
    RuntimeConfig,
    RuntimeSettings,
    RuntimeUpdate,
)
from agent.instructions.context import HandlerContext, microscope_handle
from agent.instructions.executor import Executor
from agent.instructions.handlers import default_registry
from agent.instructions.journal import InstructionJournal
from agent.instructions.models import AckStatus, JournalEntry, Lane, Outcome
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
def runtime() -> RuntimeConfig:
    """The executor's runtime settings, with no appliers bound (each test binds what it exercises)."""
    return RuntimeConfig()


@pytest.fixture
async def executor(tmp_path: Path, runtime: RuntimeConfig) -> AsyncIterator[Executor]:
    handle = microscope_handle(SimulatorBackend(SimulatorConfig(time_factor=0.0)))
    db = open_database(tmp_path)
    context = HandlerContext(
        state_dir=tmp_path / "state",
        runtime=runtime,
        device=handle,
        introspection=FakeIngest(),
        journal=InstructionJournal(db),
    )
    yield Executor(ExecutorConfig(), InstructionJournal(db), default_registry(), context)
    await handle.aclose()
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


def _documented_status_rules() -> dict[str, str]:
    """``type -> status rule`` from the last column of the instruction table of docs/instructions.md."""
    docs = (REPO / "docs" / "instructions.md").read_text(encoding="utf-8")
    lines = docs.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| type | lane |"))
    assert lines[header].rstrip(" |").endswith("| status"), "the table's last column is the status rule"
    rules: dict[str, str] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("| `"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in cells[0].split(" / "):
            rules[name.strip("`")] = cells[-1]
    return rules


def test_every_type_has_a_documented_status_rule() -> None:
    rules = _documented_status_rules()
    for spec in default_registry():
        assert rules.get(spec.instruction_type), f"no status rule for {spec.instruction_type}"
    # The two whose results can report a miss say so: a miss is failed, not processed.
    for itype in ("sem.autofocus", "sem.find_roi"):
        assert "`failed`" in rules[itype], itype
        assert "`processed` only when" in rules[itype], itype
    assert "not_applied" in rules["agent.config.update"]


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


async def test_config_update_reports_only_what_took_effect() -> None:
    runtime = RuntimeConfig()
    applied: list[tuple[str, Any]] = []

    async def apply_level(value: Any) -> None:
        applied.append(("log_level", value))

    async def refuse_heartbeat(value: Any) -> None:
        raise NotApplied("the heartbeat is owned by another process")

    unbind = runtime.bind("log_level", apply_level)
    runtime.bind("heartbeat_interval_s", refuse_heartbeat)
    with pytest.raises(ValueError, match="already has an applier"):
        runtime.bind("log_level", apply_level)
    update = await runtime.update({"log_level": "DEBUG"})
    assert update == RuntimeUpdate({"log_level": "DEBUG"}, {})
    assert applied == [("log_level", "DEBUG")]
    assert runtime.settings.log_level == "DEBUG"
    # Unchanged values are neither applied again nor reported.
    assert await runtime.update({"log_level": "DEBUG"}) == RuntimeUpdate({}, {})
    with pytest.raises(ValueError, match="status_interval_s"):
        await runtime.update({"status_interval_s": 0.01})
    assert runtime.settings.status_interval_s == RuntimeSettings().status_interval_s
    update = await runtime.update({"heartbeat_interval_s": 0, "status_interval_s": 5})
    assert update.changed == {}
    assert update.not_applied == {
        "heartbeat_interval_s": "the heartbeat is owned by another process",
        "status_interval_s": "nothing in this agent process applies status_interval_s",
    }
    # The settings show what is in effect, not what was asked.
    assert runtime.settings.heartbeat_interval_s == RuntimeSettings().heartbeat_interval_s
    assert runtime.settings.status_interval_s == RuntimeSettings().status_interval_s
    unbind()
    assert (await runtime.update({"log_level": "INFO"})).not_applied == {
        "log_level": "nothing in this agent process applies log_level"
    }
    assert RuntimeConfig.allowed_keys() == ["heartbeat_interval_s", "log_level", "status_interval_s"]


async def test_config_update_outcomes(executor: Executor, runtime: RuntimeConfig) -> None:
    periods: list[float] = []

    async def apply_status_interval(value: Any) -> None:
        periods.append(value)

    runtime.bind("status_interval_s", apply_status_interval)
    outcome = await run(executor, "agent.config.update", {"log_interval": 2.5})
    assert outcome.status is AckStatus.PROCESSED
    assert outcome.result is not None
    assert outcome.result["changed"] == {"status_interval_s": 2.5}
    assert outcome.result["not_applied"] == {}
    assert periods == [2.5]
    for payload in ({}, {"nope": 1}, {"log_level": "LOUD"}, {"log_interval": 2, "status_interval_s": 3}):
        outcome = await run(executor, "agent.config.update", payload)
        assert outcome.status is AckStatus.DECLINED, payload
    outcome = await run(executor, "agent.config.update", {"nope": 1})
    assert "allowed keys" in (outcome.error_message or "")
    # Nothing in this executor applies the heartbeat period: never reported as changed.
    outcome = await run(executor, "agent.config.update", {"heartbeat_interval_s": 0})
    assert outcome.status is AckStatus.DECLINED
    assert "heartbeat_interval_s: nothing in this agent process applies" in (outcome.error_message or "")
    assert outcome.result is not None
    assert outcome.result["changed"] == {}
    assert outcome.result["settings"]["heartbeat_interval_s"] == RuntimeSettings().heartbeat_interval_s
    # Part applied, part not: failed, with both halves in the result.
    outcome = await run(executor, "agent.config.update", {"log_interval": 7, "heartbeat_interval_s": 0})
    assert outcome.status is AckStatus.FAILED
    assert outcome.result is not None
    assert outcome.result["changed"] == {"status_interval_s": 7.0}
    assert list(outcome.result["not_applied"]) == ["heartbeat_interval_s"]
    assert periods == [2.5, 7.0]


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


async def test_autofocus_that_does_not_converge_is_failed_with_its_result(executor: Executor) -> None:
    sweep = {"method": "classical", "image_size_px": 64, "settle_s": 0}
    outcome = await run(executor, "sem.autofocus", {**sweep, "max_iters": 1, "sweep_points": 3})
    assert outcome.status is AckStatus.FAILED, outcome
    assert "did not converge" in (outcome.error_message or "")
    assert outcome.result is not None
    assert outcome.result["converged"] is False
    assert outcome.result["iterations"] == 1
    assert len(outcome.result["trace"]) == 1  # the whole result travels with the acknowledgement
    outcome = await run(executor, "sem.autofocus", {**sweep, "max_iters": 3, "sweep_points": 5})
    assert outcome.status is AckStatus.PROCESSED, outcome
    assert outcome.result is not None
    assert outcome.result["converged"] is True


async def test_find_roi_that_does_not_relocate_is_failed_with_its_result(executor: Executor) -> None:
    spec = {"l0_fov_um": 80.0, "l1_fov_um": 20.0}
    config = {"width": 128, "height": 128, "dwell_us": 0.5}
    saved = await run(
        executor, "sem.save_roi", {"name": "roi-a", "spec": spec, "config": config, "inter_level_delay_s": 0}
    )
    assert saved.status is AckStatus.PROCESSED, saved
    moved = await run(executor, "sem.stage.move_by", {"dx": 0.003, "dy": -0.002})
    assert moved.status is AckStatus.PROCESSED, moved
    outcome = await run(executor, "sem.find_roi", {"name": "roi-a", "max_iters": 4})
    assert outcome.status is AckStatus.PROCESSED, outcome
    assert outcome.result is not None
    assert outcome.result["success"] is True
    moved = await run(executor, "sem.stage.move_by", {"dx": 0.003, "dy": -0.002})
    assert moved.status is AckStatus.PROCESSED, moved
    outcome = await run(executor, "sem.find_roi", {"name": "roi-a", "max_iters": 1})
    assert outcome.status is AckStatus.FAILED, outcome
    assert "'roi-a' was not relocated" in (outcome.error_message or "")
    assert outcome.result is not None
    assert outcome.result["success"] is False
    assert outcome.result["roi_name"] == "roi-a"
    assert outcome.result["iterations"] == 1
