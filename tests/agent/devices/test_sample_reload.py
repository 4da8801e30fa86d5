"""Simulator: sample reload (placement offset, rotation, magnification error) and beam current vs noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.devices.simulator import SemSimulator, SimulatorConfig


def make(**overrides: object) -> SemSimulator:
    base: dict[str, object] = {"time_factor": 0.0, "drift_nm_per_s": 0.0, "positioning_error_um": 0.0}
    return SemSimulator(SimulatorConfig(**(base | overrides)))


async def frame(sim: SemSimulator, fov_um: float, dwell_us: float = 20.0) -> np.ndarray:
    await sim.set_focus_params(wd_mm=sim.true_focus_wd_mm())
    return (await sim.acquire(width=128, height=128, dwell_us=dwell_us, fov_um=fov_um)).image


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum())))


def test_reload_maps_stage_to_specimen() -> None:
    sim = make()
    assert sim.specimen_point_m(1.0, -2.0) == (1e-3, -2e-3)  # identity at start
    sim.reload_sample(offset_mm=(0.5, 0.25), rotation_deg=90.0)
    x, y = sim.specimen_point_m(1.0, -2.0)  # R(90°)·(0.5, -2.25) = (2.25, 0.5) mm
    assert (x, y) == pytest.approx((2.25e-3, 0.5e-3))
    sim.reload_sample()  # values replace the placement: all zero is the start
    assert sim.specimen_point_m(1.0, -2.0) == (1e-3, -2e-3)
    assert sim.action_log == []  # an operator's act, not a device operation


async def test_reloaded_sample_looks_the_same_once_compensated() -> None:
    sim = make(seed=11)
    await sim.move_to(1.0, 1.0)
    before = await frame(sim, fov_um=20.0)
    rotation_deg, mag_error = 12.0, 0.04
    sim.reload_sample(offset_mm=(0.3, -0.2), rotation_deg=rotation_deg, magnification_error=mag_error)
    # Uncompensated the same stage position shows another field.
    assert ncc(await frame(sim, fov_um=20.0), before) < 0.3
    # Stage position that maps to the old specimen point: p = R(-rot)·point + offset.
    c, s = math.cos(math.radians(-rotation_deg)), math.sin(math.radians(-rotation_deg))
    await sim.move_to(c * 1.0 - s * 1.0 + 0.3, s * 1.0 + c * 1.0 - 0.2)
    assert sim.imaged_center_m() == pytest.approx((1e-3, 1e-3), abs=1e-12)
    await sim.table_set("geometry", "Scan Rotation", -rotation_deg, None)
    after = await frame(sim, fov_um=20.0 / (1.0 + mag_error))
    assert ncc(after, before) > 0.9
    # Without the magnification compensation the field is 4 % too wide: clearly worse.
    assert ncc(await frame(sim, fov_um=20.0), before) < ncc(after, before) - 0.05


@pytest.mark.parametrize(
    "kwargs",
    [{"offset_mm": (math.nan, 0.0)}, {"rotation_deg": math.inf}, {"magnification_error": 0.6}],
)
def test_reload_refuses_bad_values(kwargs: dict[str, object]) -> None:
    sim = make()
    with pytest.raises(ValueError):
        sim.reload_sample(**kwargs)  # type: ignore[arg-type]
    assert sim.sample_offset_mm == (0.0, 0.0)
    assert sim.sample_rotation_rad == 0.0
    assert sim.magnification_error == 0.0


async def test_beam_current_sets_the_noise() -> None:
    noise = {}
    for current_pa in (20.0, 500.0):
        sim = make(seed=4, beam_current_pa=current_pa)
        a, b = await frame(sim, 2.0, dwell_us=1.0), await frame(sim, 2.0, dwell_us=1.0)
        noise[current_pa] = float(np.std(a - b))
        assert sim.metrics()["beam"]["current_pa"] == current_pa
    # Shot noise falls as 1/sqrt(electrons per pixel): 25x the current, about 5x less relative noise.
    assert noise[500.0] < 0.5 * noise[20.0]
