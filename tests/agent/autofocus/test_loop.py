"""The autofocus loop: safety caps, gains, tolerance, iteration cap, restore on failure, method selection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.autofocus import (
    AutofocusConfig,
    AutofocusError,
    Correction,
    clip_correction,
    run_autofocus,
)
from agent.autofocus import loop as loop_module
from agent.autofocus.bench import OpticalBench
from agent.autofocus.loop import run_autofocus_async
from agent.autofocus.ops import SyncFocusOps

FAST = {"settle_s": 0.0, "image_size_px": 128, "n_patches": 4}


class ScriptedCorrector:
    """Stands in for the network: returns queued predictions and records what it saw."""

    predictions: ClassVar[list[Correction]] = []
    seen_pairs: ClassVar[int] = 0

    def __init__(self, weights_path: object = None) -> None:
        pass

    def check_config(self, config: AutofocusConfig) -> None:
        pass

    def predict(self, minus: np.ndarray, plus: np.ndarray, n_patches: int) -> Correction:
        type(self).seen_pairs += 1
        return type(self).predictions.pop(0)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedCorrector]:
    monkeypatch.setattr(loop_module, "LearnedCorrector", ScriptedCorrector)
    monkeypatch.setattr(loop_module, "torch_available", lambda: True)
    ScriptedCorrector.predictions = []
    ScriptedCorrector.seen_pairs = 0
    return ScriptedCorrector


def test_clip_correction_caps_and_keeps_direction() -> None:
    cfg = AutofocusConfig(max_wd_step_um=10.0, max_stig_step=1.0)
    assert clip_correction(5.0, (0.3, 0.4), cfg) == (5.0, (0.3, 0.4), False)
    wd, stig, limited = clip_correction(-50.0, (3.0, 4.0), cfg)
    assert limited
    assert wd == -10.0
    assert stig == pytest.approx((0.6, 0.8))


def test_safety_caps_limit_each_applied_correction(scripted: type[ScriptedCorrector]) -> None:
    bench = OpticalBench(seed=1, true_wd_mm=5.0, wd_mm=5.0)
    scripted.predictions = [Correction(500.0, 4.0, -3.0), Correction(0.1, 0.0, 0.0)]
    cfg = AutofocusConfig(method="learned", max_wd_step_um=20.0, max_stig_step=1.0, **FAST)
    result = run_autofocus(bench, cfg)
    first = result.trace[0]
    assert first.limited
    assert first.applied_dwd_um == pytest.approx(20.0)
    assert (first.applied_dstig_x, first.applied_dstig_y) == pytest.approx((0.8, -0.6))
    assert bench.wd_mm == pytest.approx(5.0 + 0.020 + 0.0001)
    assert result.converged
    assert result.iterations == 2
    assert result.images == 4


def test_gain_tolerance_and_iteration_cap(scripted: type[ScriptedCorrector]) -> None:
    bench = OpticalBench(seed=2, wd_mm=5.0)
    scripted.predictions = [Correction(10.0, 0.0, 0.0)] * 3
    cfg = AutofocusConfig(method="learned", max_iters=3, gain_wd=0.5, **FAST)
    result = run_autofocus(bench, cfg)
    assert not result.converged
    assert result.iterations == 3
    assert result.images == 6
    assert "not converged" in result.message
    assert [it.applied_dwd_um for it in result.trace] == pytest.approx([5.0, 5.0, 5.0])
    assert bench.wd_mm == pytest.approx(5.015)
    assert result.final["wd_mm"] == pytest.approx(5.015)
    assert result.initial["wd_mm"] == 5.0


def test_pair_is_taken_at_wd_minus_then_plus_sigma(scripted: type[ScriptedCorrector]) -> None:
    wds: list[float] = []

    class Recording(OpticalBench):
        def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> np.ndarray:
            wds.append(self.wd_mm)
            assert fov_um == pytest.approx(1.28)
            assert shape == (128, 128)
            return super().acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)

    scripted.predictions = [Correction(0.0, 0.0, 0.0)]
    run_autofocus(
        Recording(seed=3, wd_mm=5.0), AutofocusConfig(method="learned", perturbation_um=4.0, **FAST)
    )
    assert wds == pytest.approx([4.996, 5.004])


def test_failure_mid_iteration_restores_focus(scripted: type[ScriptedCorrector]) -> None:
    class Failing(OpticalBench):
        def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> np.ndarray:
            if self.images == 1:
                raise RuntimeError("scan failed")
            return super().acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)

    bench = Failing(seed=4, wd_mm=5.0, stig=(0.2, -0.1))
    with pytest.raises(RuntimeError, match="scan failed"):
        run_autofocus(bench, AutofocusConfig(method="learned", **FAST))
    assert bench.get_focus_params() == {"wd_mm": 5.0, "stigm_x": 0.2, "stigm_y": -0.1}


def test_non_finite_prediction_is_an_error(scripted: type[ScriptedCorrector]) -> None:
    scripted.predictions = [Correction(float("nan"), 0.0, 0.0)]
    bench = OpticalBench(seed=5, wd_mm=5.0)
    with pytest.raises(AutofocusError, match="non-finite"):
        run_autofocus(bench, AutofocusConfig(method="learned", **FAST))
    assert bench.wd_mm == 5.0


def test_bad_device_answers_are_errors() -> None:
    class Broken(OpticalBench):
        def get_focus_params(self) -> Mapping[str, float]:
            return {"wd": 5.0}

    with pytest.raises(AutofocusError, match="wd_mm"):
        run_autofocus(Broken(), AutofocusConfig(method="classical", **FAST))


def test_method_selection_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module, "torch_available", lambda: False)
    with pytest.raises(AutofocusError, match="torch"):
        run_autofocus(OpticalBench(), AutofocusConfig(method="learned", **FAST))
    result = run_autofocus(
        OpticalBench(seed=6, wd_mm=5.0), AutofocusConfig(method="auto", max_iters=1, **FAST)
    )
    assert result.method == "classical"


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        AutofocusConfig(max_iters=0)
    with pytest.raises(ValueError):
        AutofocusConfig(unknown=1)  # type: ignore[call-arg]


def test_auto_falls_back_to_classical_without_weights(tmp_path: Path) -> None:
    cfg = AutofocusConfig(method="auto", max_iters=1, weights_path=str(tmp_path / "none.pt"), **FAST)
    assert run_autofocus(OpticalBench(seed=7, wd_mm=5.0), cfg).method == "classical"
    with pytest.raises(AutofocusError, match="weights file not found"):
        run_autofocus(OpticalBench(), cfg.model_copy(update={"method": "learned"}))


def test_package_imports_and_runs_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from agent.autofocus import AutofocusConfig, run_autofocus\n"
        "from agent.autofocus.bench import OpticalBench\n"
        "r = run_autofocus(OpticalBench(wd_mm=5.0), AutofocusConfig(max_iters=1, settle_s=0, image_size_px=128))\n"
        "print(r.method)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "classical"


async def test_a_cancelled_autofocus_restores_the_focus_it_started_from() -> None:
    """On the daemon's loop a time limit or a stop cancels the loop where it awaits the device; the working
    distance and stigmators read at the start of that iteration are put back before the cancellation ends it."""
    bench = OpticalBench(wd_mm=5.03, stig=(0.2, -0.1))
    started = asyncio.Event()

    class StallingOps(SyncFocusOps):
        async def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> Any:
            if bench.images >= 2:
                started.set()
                await asyncio.Event().wait()  # the device stops answering mid-iteration
            return await super().acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)

    task = asyncio.create_task(
        run_autofocus_async(StallingOps(bench), AutofocusConfig(method="classical", **FAST))
    )
    await asyncio.wait_for(started.wait(), 10)
    assert bench.wd_mm != 5.03  # the sweep had moved the focus
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (bench.wd_mm, bench.stigm_x, bench.stigm_y) == (5.03, 0.2, -0.1)
