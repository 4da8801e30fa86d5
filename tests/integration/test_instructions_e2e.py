"""End to end, every instruction type: testbed backend -> SSE -> executor -> Semphony server (HTTP) -> simulator
-> acknowledgement stored in the backend with the expected status and result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.instructions.service import InstructionService
from testbed.backend import BackendServer
from testbed.semphony_server import SemphonyServer
from tests.integration.instructions_support import (
    AGENT_ID,
    FAST_BACKEND,
    FAST_SIM,
    World,
    ack_of,
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


def status(row: dict[str, Any]) -> str:
    ack = ack_of(row)
    assert ack is not None
    return str(ack["status"])


async def test_agent_instructions(world: World, service: InstructionService) -> None:
    row = await world.run("agent.status.request")
    assert status(row) == "processed"
    res = result_of(row)
    assert res["status"] == "running" and res["agent_id"] == AGENT_ID and res["device"]["configured"]

    row = await world.run("agent.config.update", {"log_interval": 5, "log_level": "debug"})
    assert status(row) == "processed"
    assert result_of(row)["settings"]["status_interval_s"] == 5.0
    assert service.context.runtime.settings.log_level == "DEBUG"

    row = await world.run("agent.config.update", {"colour": "red"})
    assert status(row) == "declined" and "allowed keys" in ack_of(row)["error_message"]  # type: ignore[index]

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

    row = await world.run("microscope.control.take_image", {"image_params": {"fov_um": 20, "width": 64, "height": 48}})
    assert status(row) == "processed"
    res = result_of(row)
    path = Path(res["path"])
    assert path.is_file() and path.stat().st_size == res["size_bytes"] > 0
    assert path.resolve().is_relative_to((world.state_dir / "images").resolve())
    assert res["metadata"]["width"] == 64 and res["metadata"]["fov_um"] == pytest.approx(20)

    for itype, payload in (
        ("microscope.control.reorder_gridsquares", {"gridsquare_ids": ["12", "13"], "priority": "high"}),
        ("microscope.control.skip_gridsquares", {"gridsquare_ids": [14], "reason": "ice"}),
        ("microscope.control.reorder_foilholes", {"gridsquare_id": 12, "foilhole_ids": [100, 101]}),
    ):
        row = await world.run(itype, payload)
        assert status(row) == "declined", itype
        assert "decision service" in ack_of(row)["error_message"]  # type: ignore[index]


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
    assert Path(acquired["image_path"]).is_file()


async def test_guardrail_invalid_unknown_and_expired(world: World, service: InstructionService) -> None:
    row = await world.run("sem.stage.move_to", {"x": 500.0, "y": 0.0})
    assert status(row) == "declined"
    res = result_of(row)
    assert res["guardrail_type"] == "stage_soft_limits" and res["details"]

    row = await world.run("sem.stage.move_by", {"dx": 5.0})
    assert status(row) == "declined" and result_of(row)["guardrail_type"] == "relative_move_limit"

    row = await world.run("sem.set_view_field", {"fov_um": -3, "zoom": 2})
    assert status(row) == "declined"
    message = ack_of(row)["error_message"]  # type: ignore[index]
    assert "fov_um" in message and "zoom" in message

    row = await world.run("test.instruction", {"test": True})
    assert status(row) == "declined" and "unknown instruction type" in ack_of(row)["error_message"]  # type: ignore[index]

    # Expired on arrival: the backend may still send it (clock skew, a late drain); the agent declines it.
    service.config.expiry_grace_s = -3600.0
    row = await world.run("sem.stage.move_to", {"x": 1.0, "y": 1.0})
    service.config.expiry_grace_s = 0.0
    assert status(row) == "declined" and result_of(row)["expired"] is True
    assert world.semphony.simulator.position().x != pytest.approx(1.0, abs=1e-3)


async def test_no_device_configured_declines(world: World) -> None:
    async with running_service(world, device=False):
        row = await world.run("sem.get_metrics")
    assert status(row) == "declined" and "no microscope" in ack_of(row)["error_message"]  # type: ignore[index]
    _ = datetime.now(UTC) + timedelta(0)
