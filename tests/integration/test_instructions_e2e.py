"""End to end, every instruction type: testbed backend -> SSE -> executor -> Semphony server (HTTP) ->
simulator
-> acknowledgement stored in the backend with the expected status and result."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.instructions.config import apply_root_log_level
from agent.instructions.service import InstructionService
from testbed.backend import BackendServer
from testbed.semphony_server import SemphonyServer
from tests.integration.test_instructions_support import (
    AGENT_ID,
    FAST_BACKEND,
    FAST_SIM,
    World,
    ack_of,
    file_size_under,
    result_of,
    running_service,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with BackendServer(tmp_path / "backend.sqlite3", **FAST_BACKEND) as backend:
        semphony = SemphonyServer(config=FAST_SIM).start()
        try:
            session_id = backend.create_session(AGENT_ID)
            yield World(backend, semphony, session_id, tmp_path / "state")
        finally:
            semphony.stop()


@pytest.fixture
async def service(world: World) -> AsyncIterator[InstructionService]:
    async with running_service(world) as svc:
        yield svc


def error_message(row: dict[str, Any]) -> str:
    ack = ack_of(row)
    assert ack is not None
    return str(ack["error_message"] or "")


def status(row: dict[str, Any]) -> str:
    ack = ack_of(row)
    assert ack is not None
    return str(ack["status"])


async def test_agent_instructions(world: World, service: InstructionService) -> None:
    level_before = logging.getLogger().level
    row = await world.run("agent.status.request")
    assert status(row) == "processed"
    res = result_of(row)
    assert res["status"] == "running"
    assert res["agent_id"] == AGENT_ID
    assert res["device"]["configured"]

    # A bare service has no status line and no log-level applier: nothing is reported as changed.
    row = await world.run("agent.config.update", {"log_interval": 5, "log_level": "debug"})
    assert status(row) == "declined"
    assert result_of(row)["changed"] == {}
    assert sorted(result_of(row)["not_applied"]) == ["log_level", "status_interval_s"]
    assert service.context.runtime.settings.log_level == "INFO"

    unbind = service.context.runtime.bind("log_level", apply_root_log_level)
    try:
        row = await world.run("agent.config.update", {"log_level": "debug"})
    finally:
        unbind()
        logging.getLogger().setLevel(level_before)
    assert status(row) == "processed"
    assert result_of(row)["changed"] == {"log_level": "DEBUG"}
    assert service.context.runtime.settings.log_level == "DEBUG"

    row = await world.run("agent.config.update", {"colour": "red"})
    assert status(row) == "declined"
    assert "allowed keys" in error_message(row)

    for name in ("datastore", "metrics", "errors", "orphans"):
        row = await world.run(f"agent.info.{name}")
        assert status(row) == "processed"
        assert result_of(row)["source"] == "executor"


async def test_microscope_control(world: World, service: InstructionService) -> None:
    row = await world.run("microscope.control.move_stage", {"stage_position": {"x": 0.001, "y": -0.002}})
    assert status(row) == "processed"
    res = result_of(row)
    assert res["target_mm"] == {"x": 1.0, "y": -2.0, "z": None}
    assert abs(res["position_mm"]["x"] - 1.0) < 0.01
    assert world.semphony.simulator.position().x == pytest.approx(1.0, abs=0.01)

    row = await world.run(
        "microscope.control.take_image", {"image_params": {"fov_um": 20, "width": 64, "height": 48}}
    )
    assert status(row) == "processed"
    res = result_of(row)
    assert file_size_under(res["path"], world.state_dir / "images") == res["size_bytes"] > 0
    assert res["metadata"]["width"] == 64
    assert res["metadata"]["fov_um"] == pytest.approx(20)

    for itype, payload in (
        ("microscope.control.reorder_gridsquares", {"gridsquare_ids": ["12", "13"], "priority": "high"}),
        ("microscope.control.skip_gridsquares", {"gridsquare_ids": [14], "reason": "ice"}),
        ("microscope.control.reorder_foilholes", {"gridsquare_id": 12, "foilhole_ids": [100, 101]}),
    ):
        row = await world.run(itype, payload)
        assert status(row) == "declined", itype
        assert "decision service" in error_message(row)


async def test_sem_surface(world: World, service: InstructionService) -> None:
    cases: list[tuple[str, dict[str, Any] | None, str]] = [
        ("sem.get_metrics", None, "processed"),
        ("sem.set_view_field", {"fov_um": 50}, "processed"),
        ("sem.get_focus_params", None, "processed"),
        ("sem.set_focus_params", {"wd_mm": 5.1}, "processed"),
        ("sem.acquire", {"fov_um": 40, "width": 64, "height": 64}, "processed"),
        ("sem.stage.get_position", None, "processed"),
        ("sem.stage.move_to", {"x": 0.5, "y": 0.5}, "processed"),
        ("sem.stage.move_by", {"dx": 0.001, "dy": 0.0}, "processed"),
        ("sem.geometry.list", None, "processed"),
        ("sem.geometry.set", {"name": "tilt corr", "x": 1.5}, "processed"),
        ("sem.geometry.get", {"index": 1}, "processed"),
        ("sem.geometry.reset", None, "processed"),
        ("sem.centering.list", None, "processed"),
        ("sem.centering.set", {"name": "beam shift", "x": 1.0, "y": -1.0}, "processed"),
        ("sem.centering.get", {"name": "BEAM_SHIFT"}, "processed"),
        ("sem.centering.reset", None, "processed"),
        ("sem.await_human", {"message": "load the sample"}, "processed"),
        ("sem.beam_off", None, "processed"),
        ("sem.vent", None, "processed"),
        ("sem.beam_on", None, "declined"),  # guardrail: vacuum required
        ("sem.pump", None, "processed"),
        ("sem.set_beam", {"enabled": True}, "processed"),
        ("sem.vent", None, "declined"),  # guardrail: beam must be off
    ]
    for itype, payload, expected in cases:
        row = await world.run(itype, payload)
        assert status(row) == expected, (itype, ack_of(row))
    rows = {r["instruction_type"]: r for r in world.backend.instructions(world.session_id)}
    assert result_of(rows["sem.geometry.get"])  # JSON result stored
    centering = result_of(rows["sem.centering.get"])
    assert centering  # the fuzzy name resolved
    assert result_of(rows["sem.centering.reset"])["reset"] == [0, 1, 2, 3]
    acquired = result_of(rows["sem.acquire"])
    assert file_size_under(acquired["image_path"], world.state_dir) > 0


async def test_guardrail_invalid_unknown_and_expired(world: World, service: InstructionService) -> None:
    row = await world.run("sem.stage.move_to", {"x": 500.0, "y": 0.0})
    assert status(row) == "declined"
    res = result_of(row)
    assert res["guardrail_type"] == "stage_soft_limits"
    assert res["details"]

    row = await world.run("sem.stage.move_by", {"dx": 5.0})
    assert status(row) == "declined"
    assert result_of(row)["guardrail_type"] == "relative_move_limit"

    row = await world.run("sem.set_view_field", {"fov_um": -3, "zoom": 2})
    assert status(row) == "declined"
    message = error_message(row)
    assert "fov_um" in message
    assert "zoom" in message

    row = await world.run("test.instruction", {"test": True})
    assert status(row) == "declined"
    assert "unknown instruction type" in error_message(row)

    # Expired on arrival: the backend may still send it (clock skew, a late drain); the agent declines it.
    service.config.expiry_grace_s = -3600.0
    row = await world.run("sem.stage.move_to", {"x": 1.0, "y": 1.0})
    service.config.expiry_grace_s = 0.0
    assert status(row) == "declined"
    assert result_of(row)["expired"] is True
    assert world.semphony.simulator.position().x != pytest.approx(1.0, abs=1e-3)


async def test_no_device_configured_declines(world: World) -> None:
    async with running_service(world, device=False):
        row = await world.run("sem.get_metrics")
    assert status(row) == "declined"
    assert "no microscope" in error_message(row)


async def test_queue_decisions_go_to_athena(world: World) -> None:
    from agent.devices.athena import AthenaClient
    from agent.instructions.context import DecisionTarget
    from testbed.athena import AthenaServer

    with AthenaServer() as athena:
        target = DecisionTarget(AthenaClient(athena.url), "epu-session-1")
        try:
            await target.client.create_session("EPU session", session_id="epu-session-1")
            async with running_service(world, decisions=target):
                skip = await world.run(
                    "microscope.control.skip_gridsquares",
                    {"gridsquare_ids": ["GridSquare_14", 15], "reason": "ice"},
                )
                order = await world.run(
                    "microscope.control.reorder_gridsquares", {"gridsquare_ids": [12, 13], "priority": "high"}
                )
                holes = await world.run(
                    "microscope.control.reorder_foilholes",
                    {"gridsquare_id": "12", "foilhole_ids": [101, 100]},
                )
                bad = await world.run("microscope.control.skip_gridsquares", {"gridsquare_ids": ["square-x"]})
        finally:
            await target.client.close()
        stored = athena.decisions("epu-session-1")
    assert [status(r) for r in (skip, order, holes, bad)] == [
        "processed",
        "processed",
        "processed",
        "declined",
    ], [ack_of(r) for r in (skip, order, holes)]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for d in stored:
        by_type.setdefault(d["decisionType"], []).append(d)
    assert {(d["areaId"], d["decisionValue"]) for d in by_type["gridSquareSelection"]} == {
        (14, "false"),
        (15, "false"),
    }
    assert [(d["areaId"], d["decisionValue"]) for d in by_type["acquisitionOrder"][:2]] == [
        (12, "1"),
        (13, "2"),
    ]
    selection = by_type["foilHoleSelection"][0]
    assert selection["areaId"] == 12
    assert '"areaId":101' in selection["decisionValue"]
    assert [(d["areaId"], d["decisionValue"]) for d in by_type["acquisitionOrder"][2:]] == [
        (101, "1"),
        (100, "2"),
    ]
    assert len(result_of(holes)["decisions"]) == 3


async def test_roi_and_autofocus(world: World, service: InstructionService) -> None:
    spec = {"l0_fov_um": 80.0, "l1_fov_um": 20.0}
    config = {"width": 128, "height": 128, "dwell_us": 0.5}
    row = await world.run(
        "sem.save_roi", {"name": "roi-a", "spec": spec, "config": config, "inter_level_delay_s": 0}
    )
    assert status(row) == "processed", ack_of(row)
    assert (world.state_dir / "rois" / "roi-a").is_dir()
    row = await world.run("sem.save_roi", {"name": "../escape", "spec": spec})
    assert status(row) == "declined"
    row = await world.run("sem.stage.move_by", {"dx": 0.003, "dy": -0.002})
    assert status(row) == "processed"
    row = await world.run("sem.find_roi", {"name": "roi-a", "max_iters": 4})
    assert status(row) == "processed", ack_of(row)
    assert result_of(row)["roi_name"] == "roi-a"
    assert result_of(row)["success"] is True
    row = await world.run("sem.find_roi", {"name": "missing"})
    assert status(row) == "declined"
    sweep = {"method": "classical", "image_size_px": 64, "settle_s": 0}
    # One iteration of a 3-point sweep does not reach focus: that is a failure, reported with the result.
    row = await world.run("sem.autofocus", {**sweep, "max_iters": 1, "sweep_points": 3})
    assert status(row) == "failed", ack_of(row)
    assert "did not converge" in error_message(row)
    assert result_of(row)["converged"] is False
    row = await world.run("sem.autofocus", {**sweep, "max_iters": 3, "sweep_points": 5})
    assert status(row) == "processed", ack_of(row)
    assert result_of(row)["converged"] is True
