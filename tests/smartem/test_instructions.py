"""Instructions from the real SmartEM backend to the agent daemon (``em-agent run`` as a process, simulated SEM):
every instruction type the agent handles is created through the backend's own endpoint, delivered over its SSE
stream, executed and acknowledged; the acknowledgement is read back from the backend's tables. Then the stream
drops (the API is restarted) and instructions keep flowing; an unknown type and an invalid payload are declined
with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.instructions.handlers import default_registry
from testbed.smartem_real import RealSmartEM
from tests.smartem.support import AGENT_ID, Daemon, running_daemon

pytestmark = [pytest.mark.smartem, pytest.mark.integration]

#: One case per instruction type the agent handles: (type, payload, expected acknowledgement status). The order
#: matters for the vacuum/beam guardrails at the end.
CASES: list[tuple[str, Any, str]] = [
    ("agent.status.request", {}, "processed"),
    ("agent.config.update", {"log_level": "debug"}, "processed"),
    ("agent.info.datastore", {}, "processed"),
    ("agent.info.metrics", {}, "processed"),
    ("agent.info.errors", {}, "processed"),
    ("agent.info.orphans", {}, "processed"),
    ("microscope.control.move_stage", {"stage_position": {"x": 0.001, "y": -0.002}}, "processed"),
    (
        "microscope.control.take_image",
        {"image_params": {"fov_um": 20, "width": 64, "height": 48}},
        "processed",
    ),
    # No decision service (Athena) is configured: the three EPU-decision types are declined, saying so.
    ("microscope.control.reorder_gridsquares", {"gridsquare_ids": ["12", "13"]}, "declined"),
    ("microscope.control.skip_gridsquares", {"gridsquare_ids": [14], "reason": "ice"}, "declined"),
    ("microscope.control.reorder_foilholes", {"gridsquare_id": 12, "foilhole_ids": [100, 101]}, "declined"),
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
    (
        "sem.save_roi",
        {
            "name": "roi-a",
            "spec": {"l0_fov_um": 80.0, "l1_fov_um": 20.0},
            "config": {"width": 128, "height": 128, "dwell_us": 0.5},
            "inter_level_delay_s": 0,
        },
        "processed",
    ),
    ("sem.find_roi", {"name": "roi-a", "max_iters": 4}, "processed"),
    (
        "sem.autofocus",
        # sem.set_focus_params above left the WD ~100 µm from focus: a coarse sweep wide enough to see the
        # peak, and a step cap that lets the first round reach it (20/20 seeds converge on the bench).
        {
            "method": "classical",
            "max_iters": 6,
            "image_size_px": 64,
            "sweep_points": 9,
            "sweep_range_um": 150,
            "max_wd_step_um": 200,
            "settle_s": 0,
        },
        "processed",
    ),
    ("sem.await_human", {"message": "load the sample"}, "processed"),
    ("sem.beam_off", None, "processed"),
    ("sem.vent", None, "processed"),
    ("sem.beam_on", None, "declined"),  # guardrail: vacuum required
    ("sem.pump", None, "processed"),
    ("sem.set_beam", {"enabled": True}, "processed"),
]


@pytest.fixture
def daemon(smartem: RealSmartEM, tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(smartem, tmp_path) as running:
        yield running


def test_cases_cover_every_handled_type() -> None:
    assert sorted({t for t, _p, _s in CASES}) == default_registry().types()


@pytest.mark.timeout(600)
def test_every_instruction_type_is_executed_and_acknowledged(daemon: Daemon) -> None:
    for instruction_type, payload, expected in CASES:
        ack = daemon.run(instruction_type, payload)
        assert ack["status"] == expected, (instruction_type, ack)
        assert ack["instruction_status"] == "acknowledged"
        if expected == "declined":
            assert ack["error"], (instruction_type, ack)
    # Results travel in the acknowledgement and are stored by the backend.
    status = daemon.run("agent.status.request")
    assert json.loads(status["result"])["agent_id"] == AGENT_ID


@pytest.mark.timeout(300)
def test_unknown_type_and_invalid_payload_are_declined_with_the_reason(daemon: Daemon) -> None:
    unknown = daemon.run("sem.teleport", {"where": "moon"})
    assert unknown["status"] == "declined"
    assert "sem.teleport" in unknown["error"] or "unknown" in unknown["error"].lower(), unknown
    invalid = daemon.run("sem.stage.move_to", {"x": "far"})
    assert invalid["status"] == "declined"
    assert "x" in invalid["error"], invalid


@pytest.mark.timeout(300)
def test_instructions_flow_again_after_the_api_restarts(daemon: Daemon) -> None:
    assert daemon.run("sem.get_metrics")["status"] == "processed"
    daemon.smartem.restart_api()  # the SSE stream drops; the agent reconnects with backoff
    first = daemon.create("sem.stage.get_position")
    second = daemon.create("agent.status.request")
    assert daemon.ack(first, within_s=120)["status"] == "processed"
    assert daemon.ack(second, within_s=60)["status"] == "processed"
    assert daemon.proc.poll() is None, daemon.log()[-3000:]
