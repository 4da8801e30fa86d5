"""ROI save/find through the real device path: Semphony ImagingDevice over the in-process SEM simulator."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.roi import RoiSpec, load_roi_from_fs

semphony = pytest.importorskip("agent.devices.semphony")
sim_config = pytest.importorskip("agent.devices.simulator.config")


@pytest.fixture
def device() -> Iterator[Any]:
    client = semphony.SemphonyClient.simulated(sim_config.SimulatorConfig(seed=5, time_factor=0.0))
    try:
        with client.run("roi-test").session() as session:
            sem = semphony.ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)
            yield sem
    finally:
        client.close()


def test_save_then_find_through_the_sdk(device: Any, tmp_path: Path) -> None:
    config = semphony.AcquisitionConfig(width=128, height=128, dwell_us=1.0)
    home = device.stage.get_pos()
    saved = device.imaging.save_roi(
        "sdk-roi",
        RoiSpec(l0_fov_um=100, l1_fov_um=25),
        config=config,
        target_dir=str(tmp_path),
        inter_level_delay_s=0,
    )
    assert [lv.level for lv in saved.levels] == ["l0", "l1"]
    assert load_roi_from_fs(tmp_path).name == "sdk-roi"
    device.stage.move_delta(0.03, -0.02)
    result = device.imaging.find_roi(str(tmp_path), stage_mode="same_session")
    assert result.success, result.message
    pos = device.stage.get_pos()
    # Back within a few pixels of the saved pose (the simulator adds 0.5 µm positioning error per move).
    assert math.hypot(pos["x"] - home["x"], pos["y"] - home["y"]) * 1e3 < 3.0
