"""SEM simulator physics and bookkeeping (driven directly, without the SDK)."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from agent.devices.errors import SemphonyApiError
from agent.devices.simulator import SemSimulator, SimulatorConfig


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sharpness(image: np.ndarray) -> float:
    """Mean squared gradient (larger = sharper)."""
    gy, gx = np.gradient(image.astype(np.float64))
    return float(np.mean(gx**2 + gy**2))


def make(**overrides: object) -> SemSimulator:
    return SemSimulator(SimulatorConfig(time_factor=0.0, drift_nm_per_s=0.0, **overrides))


async def frame(
    sim: SemSimulator, *, dwell_us: float = 20.0, size: int = 128, fov_um: float = 2.0
) -> np.ndarray:
    result = await sim.acquire(width=size, height=size, dwell_us=dwell_us, fov_um=fov_um)
    return result.image


async def test_blur_grows_with_defocus() -> None:
    sim = make()
    focus = sim.true_focus_wd_mm()
    ideal = sim.ideal_stigmator
    await sim.set_focus_params(stigm_x=ideal[0], stigm_y=ideal[1])
    scores = []
    for defocus_um in (0.0, 3.0, 10.0, 30.0):
        await sim.set_focus_params(wd_mm=focus + defocus_um * 1e-3)
        scores.append(sharpness(await frame(sim)))
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 3 * scores[-1]
    await sim.set_focus_params(wd_mm=focus - 10e-3)  # symmetric: under-focus blurs as well
    assert sharpness(await frame(sim)) < 0.8 * scores[0]


async def test_astigmatism_blurs_at_best_focus() -> None:
    sim = make()
    await sim.set_focus_params(
        wd_mm=sim.true_focus_wd_mm(), stigm_x=sim.ideal_stigmator[0], stigm_y=sim.ideal_stigmator[1]
    )
    corrected = sharpness(await frame(sim))
    await sim.set_focus_params(stigm_x=sim.ideal_stigmator[0] + 3.0)
    assert sharpness(await frame(sim)) < 0.8 * corrected


async def test_noise_falls_with_dwell() -> None:
    sim = make()
    await sim.set_focus_params(wd_mm=sim.true_focus_wd_mm())
    noise = {}
    for dwell in (0.2, 5.0):
        a, b = await frame(sim, dwell_us=dwell), await frame(sim, dwell_us=dwell)
        noise[dwell] = float(np.std(a - b))
    assert noise[5.0] < 0.5 * noise[0.2]


async def test_same_seed_same_frame_and_seed_changes_specimen() -> None:
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    first, second, other = await frame(a), await frame(b), await frame(c)
    np.testing.assert_array_equal(first, second)
    assert float(np.abs(first - other).mean()) > 0.02


async def test_focus_depends_on_stage_height_and_position() -> None:
    sim = make(focus_slope_um_per_mm=1.0)
    base = sim.true_focus_wd_mm()
    await sim.move_to(0.0, 0.0, z=10.5)
    assert sim.true_focus_wd_mm() == pytest.approx(base - 0.5)
    assert abs(sim.true_focus_wd_mm(10.0, 0.0) - sim.true_focus_wd_mm(0.0, 0.0)) > 0.0
    assert abs(sim.true_focus_wd_mm(10.0, 0.0) - sim.true_focus_wd_mm(0.0, 0.0)) <= 10e-3 + 1e-12


async def test_positioning_error_is_small_and_invisible_to_encoders() -> None:
    sim = make(positioning_error_um=0.5)
    await sim.move_to(1.0, 2.0)
    assert sim.position().as_dict()["x"] == 1.0
    cx, cy = sim.imaged_center_m()
    error_um = math.hypot(cx - 1e-3, cy - 2e-3) * 1e6
    assert 0.0 < error_um < 3.0


async def test_slow_drift() -> None:
    clock = FakeClock()
    sim = SemSimulator(
        SimulatorConfig(time_factor=0.0, drift_nm_per_s=2.0, positioning_error_um=0.0), clock=clock
    )
    start = sim.imaged_center_m()
    clock.now += 500.0
    moved = math.dist(start, sim.imaged_center_m())
    assert moved == pytest.approx(1e-6, rel=1e-6)  # 2 nm/s x 500 s
    assert sim.position().x == 0.0  # the stage itself did not move


async def test_pump_and_vent_durations_scale_with_time_factor() -> None:
    sim = SemSimulator(SimulatorConfig(time_factor=0.01, pump_duration_s=20.0, vent_duration_s=10.0))
    await sim.set_beam(False)
    started = time.monotonic()
    venting = asyncio.create_task(sim.vent())
    await asyncio.sleep(0.03)
    assert sim.vacuum == "venting"
    assert sim.metrics()["vacuum"]["pressure_pa"] > 1.0
    assert (await venting)["duration_s"] == 10.0
    vent_s = time.monotonic() - started
    started = time.monotonic()
    pumping = asyncio.create_task(sim.pump())
    await asyncio.sleep(0.05)
    assert sim.vacuum == "pumping"
    await pumping
    pump_s = time.monotonic() - started
    assert sim.vacuum == "pumped"
    assert 0.09 <= vent_s < 1.0
    assert 0.19 <= pump_s < 1.5


async def test_hv_interlock() -> None:
    sim = make()
    assert sim.beam_on
    assert (await sim.vent())["beam_switched_off"] is True
    with pytest.raises(SemphonyApiError) as err:
        await sim.set_beam(True)
    assert err.value.status_code == 409
    with pytest.raises(SemphonyApiError):
        await sim.acquire(width=32, height=32, dwell_us=1.0)


async def test_hardware_limits() -> None:
    sim = make()
    with pytest.raises(SemphonyApiError):
        await sim.move_to(60.0, 0.0)
    with pytest.raises(SemphonyApiError):
        await sim.set_view_field(1e5)
    with pytest.raises(SemphonyApiError):
        await sim.set_focus_params(wd_mm=100.0)
    assert sim.counters == {}


async def test_image_shift_and_scan_rotation_move_the_view() -> None:
    sim = make(positioning_error_um=0.0)
    before = sim.imaged_center_m()
    await sim.table_set("geometry", "image shift", 2.0, -1.0)
    after = sim.imaged_center_m()
    assert (after[0] - before[0], after[1] - before[1]) == pytest.approx((2e-6, -1e-6))
    straight = await frame(sim, fov_um=5.0)
    await sim.table_set("geometry", "scan rotation", 90.0, None)
    rotated = await frame(sim, fov_um=5.0)
    assert float(np.abs(straight - rotated).mean()) > 0.02


async def test_every_action_is_counted_once() -> None:
    sim = make()
    await sim.move_to(1.0, 1.0)
    await sim.move_delta(dx=0.01)
    await sim.set_view_field(50.0)
    await sim.acquire(width=32, height=32, dwell_us=1.0)
    sim.metrics()
    sim.position()
    assert dict(sim.counters) == {"StageMoveTo": 1, "StageMoveDelta": 1, "SetViewField": 1, "Acquire": 1}
    assert [a.capability for a in sim.action_log] == [
        "StageMoveTo",
        "StageMoveDelta",
        "SetViewField",
        "Acquire",
    ]
    assert [a.seq for a in sim.action_log] == [1, 2, 3, 4]


async def test_frame_time_follows_dwell_and_pixels() -> None:
    sim = SemSimulator(SimulatorConfig(time_factor=0.1))
    started = time.monotonic()
    result = await sim.acquire(width=500, height=400, dwell_us=2.0)
    assert result.metadata["frame_time_s"] == pytest.approx(2e-6 * 200_000 * 1.1 + 0.08)
    assert time.monotonic() - started >= 0.1 * result.metadata["frame_time_s"] * 0.95
