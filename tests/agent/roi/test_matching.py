"""The matcher on known synthetic transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.devices.simulator.optics import Specimen, render_image
from agent.roi import register

FOV = 100e-6
SHAPE = (256, 256)


def _view(
    sp: Specimen, center: tuple[float, float], rot: float = 0.0, fov: float = FOV, seed: int = 0
) -> np.ndarray:
    return render_image(
        sp,
        center_m=center,
        fov_m=fov,
        scan_rotation_rad=rot,
        shape=SHAPE,
        defocus_m=1e-6,
        stig=(0.0, 0.0),
        dwell_s=1e-6,
        rng=np.random.default_rng(seed),
    )


@pytest.mark.parametrize(
    ("offset", "rot_deg", "scale_err"),
    [((20e-6, -10e-6), 0.0, 0.0), ((-40e-6, 30e-6), 8.0, 0.04), ((10e-6, 45e-6), -10.0, -0.05)],
)
def test_register_recovers_known_transforms(
    offset: tuple[float, float], rot_deg: float, scale_err: float
) -> None:
    sp = Specimen(11)
    c0 = (2e-3, -1e-3)
    rot = math.radians(rot_deg)
    saved = _view(sp, c0)
    live = _view(sp, (c0[0] + offset[0], c0[1] + offset[1]), rot=rot, fov=FOV * (1 + scale_err), seed=1)
    m = register(saved, live)
    # Expected: the saved centre lies at live pixel offset R(-rot)·(-offset) / live pixel size.
    px = FOV * (1 + scale_err) / SHAPE[1]
    c, s = math.cos(-rot), math.sin(-rot)
    expected = ((-c * offset[0] + s * offset[1]) / px, (-s * offset[0] - c * offset[1]) / px)
    assert m.method == "features"
    assert m.tx == pytest.approx(expected[0], abs=0.5)
    assert m.ty == pytest.approx(expected[1], abs=0.5)
    assert math.degrees(m.angle_rad) == pytest.approx(-rot_deg, abs=0.2)
    assert m.scale == pytest.approx(1.0 / (1.0 + scale_err), abs=0.003)
    assert m.confidence > 0.5


def test_unrelated_images_have_low_confidence() -> None:
    saved = _view(Specimen(1), (0.0, 0.0))
    other = _view(Specimen(2), (0.0, 0.0))
    assert register(saved, other).confidence < 0.25


def test_phase_correlation_fallback_on_blurred_images() -> None:
    sp = Specimen(12)

    def blurred(center_m: tuple[float, float], seed: int) -> np.ndarray:
        return render_image(
            sp,
            center_m=center_m,
            fov_m=FOV,
            scan_rotation_rad=0.0,
            shape=SHAPE,
            defocus_m=400e-6,
            stig=(0.0, 0.0),
            dwell_s=1e-6,
            rng=np.random.default_rng(seed),
        )

    # Heavy blur: few sharp features for SIFT, yet the translation is recovered.
    saved = blurred((0.0, 0.0), 0)
    live = blurred((12 * FOV / 256, 0.0), 1)
    m = register(saved, live)
    assert m.tx == pytest.approx(-12.0, abs=1.0)
    assert m.ty == pytest.approx(0.0, abs=1.0)
    assert m.confidence > 0.25
