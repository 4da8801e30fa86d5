"""End to end on OpenFIBSEM's DemoMicroscope: testbed backend -> SSE -> executor -> openfibsem backend ->
DemoMicroscope -> acknowledgement stored in the backend, for every instruction type the suite over the
simulator covers; and ``em-agent run --device openfibsem`` as a real process.

Where OpenFIBSEM cannot express a call (tilt correction, operator prompts) or the demo's synthetic frames
cannot support it (autofocus, ROI relocation), the instruction is acknowledged ``declined`` with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.app import DeviceOptions
from agent.instructions.service import InstructionService
from testbed.backend import BackendServer
from tests.integration.test_instructions_support import (
    AGENT_ID,
    FAST_BACKEND,
    World,
    ack_of,
    file_size_under,
    result_of,
    running_service,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openfibsem_demo")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with BackendServer(tmp_path / "backend.sqlite3", **FAST_BACKEND) as backend:
        session_id = backend.create_session(AGENT_ID)
        yield World(backend, None, session_id, tmp_path / "state", device=DeviceOptions(backend="openfibsem"))


@pytest.fixture
async def service(world: World) -> AsyncIterator[InstructionService]:
    async with running_service(world) as svc:
        yield svc


def status(row: dict[str, Any]) -> str:
    ack = ack_of(row)
    assert ack is not None
    return str(ack["status"])


def error_message(row: dict[str, Any]) -> str:
    ack = ack_of(row)
    assert ack is not None
    return str(ack["error_message"] or "")


async def test_sem_surface_on_the_demo_microscope(world: World, service: InstructionService) -> None:
    cases: list[tuple[str, dict[str, Any] | None, str]] = [
        ("sem.get_metrics", None, "processed"),
        ("sem.set_view_field", {"fov_um": 50}, "processed"),
        ("sem.get_focus_params", None, "processed"),
        ("sem.set_focus_params", {"wd_mm": 5.1, "stigm_y": 0.2}, "processed"),
        ("sem.acquire", {"fov_um": 40, "width": 64, "height": 64}, "processed"),
        ("sem.stage.get_position", None, "processed"),
        ("sem.stage.move_to", {"x": 0.5, "y": 0.5, "r": 15.0}, "processed"),
        ("sem.stage.move_by", {"dx": 0.001, "dy": 0.0, "dt": 1.0}, "processed"),
        ("sem.stage.get_position", {"latest": True}, "processed"),
        ("sem.geometry.list", None, "processed"),
        ("sem.geometry.set", {"name": "scan rotation", "x": 10.0}, "processed"),
        ("sem.geometry.get", {"index": 0}, "processed"),
        ("sem.geometry.set", {"name": "tilt corr", "x": 1.5}, "declined"),  # OpenFIBSEM has none
        ("sem.geometry.reset", None, "processed"),
        ("sem.centering.list", None, "processed"),
        ("sem.centering.set", {"name": "beam shift", "x": 1.0, "y": -1.0}, "processed"),
        ("sem.centering.get", {"name": "BEAM_SHIFT"}, "processed"),
        ("sem.centering.get", {"name": "gun tilt"}, "declined"),  # OpenFIBSEM has none
        ("sem.centering.reset", None, "processed"),
        ("sem.await_human", {"message": "load the sample"}, "declined"),  # no operator UI in OpenFIBSEM
        ("sem.beam_off", None, "processed"),
        ("sem.vent", None, "processed"),
        ("sem.beam_on", None, "declined"),  # guardrail: vacuum required
        ("sem.pump", None, "processed"),
        ("sem.set_beam", {"enabled": True}, "processed"),
        ("sem.vent", None, "declined"),  # guardrail: beam must be off
    ]
    rows = []
    for itype, payload, expected in cases:
        row = await world.run(itype, payload)
        assert status(row) == expected, (itype, ack_of(row))
        rows.append(row)

    def result(itype: str, payload: dict[str, Any] | None) -> Any:
        return result_of(rows[cases.index((itype, payload, "processed"))])

    metrics = result("sem.get_metrics", None)
    assert metrics["instrument"]["model"] == "DemoMicroscope"
    assert result("sem.set_focus_params", {"wd_mm": 5.1, "stigm_y": 0.2})["wd_mm"] == pytest.approx(5.1)
    acquired = result("sem.acquire", {"fov_um": 40, "width": 64, "height": 64})
    assert file_size_under(acquired["image_path"], world.state_dir) == acquired["size_bytes"] > 0
    assert acquired["fov_um"] == pytest.approx(40.0)
    assert result("sem.stage.move_to", {"x": 0.5, "y": 0.5, "r": 15.0}) == pytest.approx(
        {"x": 0.5, "y": 0.5, "z": 0.0, "r": 15.0, "t": 0.0}
    )
    moved = result("sem.stage.move_by", {"dx": 0.001, "dy": 0.0, "dt": 1.0})
    assert (moved["x"], moved["t"]) == pytest.approx((0.501, 1.0))
    assert result("sem.geometry.get", {"index": 0})["x"] == pytest.approx(10.0)
    assert result("sem.centering.reset", None) == {"reset": [0]}
    declined = {
        "sem.geometry.set": "tilt-correction",
        "sem.centering.get": "gun-tilt",
        "sem.await_human": "operator prompt",
    }
    for row in rows:
        reason = declined.get(row["instruction_type"])
        if reason is not None and status(row) == "declined":
            assert reason in error_message(row)
            assert result_of(row)["unsupported"] is True
    guarded = [
        r for r in rows if r["instruction_type"] in ("sem.beam_on", "sem.vent") and status(r) == "declined"
    ]
    assert [result_of(r)["guardrail_type"] for r in guarded] == ["vacuum_required", "beam_on_during_vent"]


async def test_microscope_control_and_guardrails(world: World, service: InstructionService) -> None:
    row = await world.run("microscope.control.move_stage", {"stage_position": {"x": 0.001, "y": -0.002}})
    assert status(row) == "processed", ack_of(row)
    assert result_of(row)["position_mm"]["x"] == pytest.approx(1.0)
    row = await world.run(
        "microscope.control.take_image", {"image_params": {"fov_um": 20, "width": 64, "height": 48}}
    )
    assert status(row) == "processed", ack_of(row)
    res = result_of(row)
    assert file_size_under(res["path"], world.state_dir / "images") == res["size_bytes"] > 0
    assert res["metadata"]["height"] == 48

    row = await world.run("sem.stage.move_to", {"x": 500.0, "y": 0.0})
    assert status(row) == "declined"
    assert result_of(row)["guardrail_type"] == "stage_soft_limits"
    row = await world.run("sem.stage.move_by", {"dx": 5.0})
    assert status(row) == "declined"
    assert result_of(row)["guardrail_type"] == "relative_move_limit"
    row = await world.run("sem.set_focus_params", {"wd_mm": 45.0})
    assert status(row) == "declined"
    assert result_of(row)["guardrail_type"] == "working_distance_range"
    row = await world.run("sem.stage.get_position")
    assert result_of(row)["x"] == pytest.approx(1.0)  # nothing refused moved


async def test_roi_and_autofocus_where_the_demo_images_allow(
    world: World, service: InstructionService
) -> None:
    spec = {"l0_fov_um": 80.0, "l1_fov_um": 20.0}
    config = {"width": 64, "height": 64, "dwell_us": 0.5}
    row = await world.run(
        "sem.save_roi", {"name": "roi-a", "spec": spec, "config": config, "inter_level_delay_s": 0}
    )
    assert status(row) == "processed", ack_of(row)
    assert (world.state_dir / "rois" / "roi-a" / "manifest.json").is_file()
    row = await world.run("sem.find_roi", {"name": "roi-a", "max_iters": 2})
    assert status(row) == "declined", ack_of(row)
    assert "stage position" in error_message(row)
    row = await world.run(
        "sem.autofocus",
        {"method": "classical", "max_iters": 1, "image_size_px": 64, "sweep_points": 3, "settle_s": 0},
    )
    assert status(row) == "declined", ack_of(row)
    assert "working distance" in error_message(row)


def test_em_agent_run_with_the_openfibsem_device(tmp_path: Path) -> None:
    """``em-agent run --device openfibsem`` as a process: stage, focus, beam, vacuum and imaging, then SIGTERM."""
    with BackendServer(tmp_path / "backend.sqlite3", **FAST_BACKEND) as backend:
        session_id = backend.create_session(AGENT_ID)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
        env.update(
            EM_AGENT_STATE_DIR=str(tmp_path / "state"),
            EM_AGENT_BACKEND__HEARTBEAT_INTERVAL_S="0",
            PYTHONUNBUFFERED="1",
        )
        cmd = [sys.executable, "-m", "agent.cli", "run", "--backend", backend.url, "--agent-id", AGENT_ID]
        cmd += ["--session-id", session_id, "--device", "openfibsem"]
        log_path = tmp_path / "agent.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            steps: list[tuple[str, dict[str, Any] | None]] = [
                ("sem.stage.move_to", {"x": 1.0, "y": 2.0}),
                ("sem.stage.move_by", {"dx": 0.01}),
                ("sem.set_focus_params", {"wd_mm": 6.0}),
                ("sem.beam_off", None),
                ("sem.vent", None),
                ("sem.pump", None),
                ("sem.beam_on", None),
                ("sem.acquire", {"fov_um": 30, "width": 64, "height": 64}),
                ("sem.get_metrics", None),
            ]
            ids = [backend.create_instruction(session_id, itype, payload) for itype, payload in steps]
            deadline = time.monotonic() + 90
            while True:
                rows = {r["instruction_id"]: r for r in backend.instructions(session_id)}
                if all(ack_of(rows[i]) is not None for i in ids):
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
            statuses = [status(rows[i]) for i in ids]
            assert statuses == ["processed"] * len(steps), [ack_of(rows[i]) for i in ids]
            acquired = result_of(rows[ids[7]])
            assert file_size_under(acquired["image_path"], tmp_path / "state") > 0
            metrics = result_of(rows[ids[8]])
            assert metrics["stage"]["x"] == pytest.approx(1.01)
            assert metrics["optics"]["wd_mm"] == pytest.approx(6.0)
            assert metrics["vacuum"]["state"] == "pumped"
            assert metrics["beam"]["on"] is True
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert code == 0, log_path.read_text()[-3000:]
