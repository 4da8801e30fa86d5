"""ROI save/find through the real device path: Semphony ImagingDevice over the in-process SEM simulator."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import semphony
from agent.devices.simulator import config as sim_config
from agent.roi import RoiSpec, load_roi_from_fs


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


def test_cross_session_reload_through_the_sdk(tmp_path: Path) -> None:
    """A reloaded sample (offset, 7° rotation, 3 % magnification error): rotation is fixed by the scan."""
    config = sim_config.SimulatorConfig(seed=6, time_factor=0.0, drift_nm_per_s=0.0)
    client = semphony.SemphonyClient.simulated(config)
    sim = client.backend.server.sem
    try:
        with client.run("roi-cross").session() as session:
            sem = semphony.ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)
            sem.stage.move_to(1.0, -1.0)
            acq = semphony.AcquisitionConfig(width=192, height=192, dwell_us=1.0)
            spec = RoiSpec(l0_fov_um=100, l1_fov_um=25)
            sem.imaging.save_roi("x", spec, config=acq, target_dir=str(tmp_path), inter_level_delay_s=0)
            target = sim.imaged_center_m()
            rot = math.radians(7.0)
            # Put the target 30 µm / -20 µm (specimen frame) from the beam, sample turned by 7°.
            q = (target[0] * 1e3 + 0.03, target[1] * 1e3 - 0.02)
            c, s = math.cos(-rot), math.sin(-rot)
            offset = (1.0 - (c * q[0] - s * q[1]), -1.0 - (s * q[0] + c * q[1]))
            sim.reload_sample(offset_mm=offset, rotation_deg=7.0, magnification_error=0.03)
            result = sem.imaging.find_roi(str(tmp_path), stage_mode="cross_session", base_config=acq)
            assert result.success, result.message
            assert result.iterations <= 4
            # The scan turned back by the sample's rotation (to within rot_tol), through the SDK geometry.
            scan_deg = sem.imaging.geometric_transformations.get("Scan Rotation")["x"]
            assert abs(scan_deg + 7.0) < math.degrees(0.017)
            assert result.fov_factor == pytest.approx(1 / 1.03, abs=0.01)
            now = sim.imaged_center_m()
            assert math.hypot(now[0] - target[0], now[1] - target[1]) * 1e6 < 15 * 25 / 192
    finally:
        client.close()
