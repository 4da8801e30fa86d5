"""The SDK's ROI adapter: stage, field of view and image rotation (scan rotation against stage r)."""

from __future__ import annotations

import math

import pytest

from agent.devices.semphony import ImagingDevice
from agent.devices.semphony.systems import _RoiOpsAdapter
from agent.roi import RoiOps, RotatableRoiOps
from tests.agent.devices.conftest import Rig


def test_adapter_reads_and_sets_image_rotation(sem: ImagingDevice, rig: Rig) -> None:
    ops = _RoiOpsAdapter(sem)
    assert isinstance(ops, RoiOps)
    assert isinstance(ops, RotatableRoiOps)
    assert ops.get_image_rotation_rad() == 0.0
    sem.stage.move_to(0.0, 0.0, r=30.0)
    # Turning the stage by +30° turns the image by -30° in the stage frame.
    assert ops.get_image_rotation_rad() == pytest.approx(math.radians(-30.0))
    ops.set_image_rotation_rad(0.2)
    assert sem.imaging.geometric_transformations.get("Scan Rotation")["x"] == pytest.approx(
        math.degrees(0.2) + 30.0
    )
    assert ops.get_image_rotation_rad() == pytest.approx(0.2)
    assert rig.core.sem.geometries[2].values[0] == pytest.approx(math.degrees(0.2) + 30.0)


def test_adapter_wraps_rotation_into_the_geometry_limits(sem: ImagingDevice) -> None:
    ops = _RoiOpsAdapter(sem)
    sem.stage.move_to(0.0, 0.0, r=350.0)
    ops.set_image_rotation_rad(math.radians(170.0))
    scan = sem.imaging.geometric_transformations.get("Scan Rotation")["x"]
    assert -180.0 <= scan < 180.0
    assert scan == pytest.approx(160.0)  # 170 + 350 = 520 ≡ 160
    assert ops.get_image_rotation_rad() == pytest.approx(math.radians(170.0))
    with pytest.raises(ValueError):
        ops.set_image_rotation_rad(math.nan)
