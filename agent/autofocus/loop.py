"""The autofocus loop: measure, predict, cap, apply with gain, repeat (sem-reference §6–7, §9).

Learned iteration (DeepFocus pattern): read WD and stigmators; acquire at ``WD − sigma`` and ``WD + sigma``;
predict the correction over several patch pairs; stop when it is below tolerance (the small correction is still
applied); clip it to the safety caps; apply it with the gains. Classical iteration: one round of sharpness
sweeps (see :mod:`agent.autofocus.classical`), each step clipped to the same caps. If anything fails mid-
iteration the working distance and stigmators read at its start are restored before the error propagates.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.autofocus.classical import sharpness, sweep
from agent.autofocus.learned import SHIPPED_WEIGHTS, Correction, LearnedCorrector, torch_available
from agent.autofocus.models import AutofocusConfig, AutofocusError, AutofocusIteration, AutofocusResult
from agent.autofocus.ops import FocusOps

__all__ = ["clip_correction", "run_autofocus"]

_log = logging.getLogger(__name__)


def clip_correction(
    dwd_um: float, dstig: tuple[float, float], config: AutofocusConfig
) -> tuple[float, tuple[float, float], bool]:
    """Clip a correction to the safety caps; the stigmator vector keeps its direction. Returns (wd, stig, clipped)."""
    limited = False
    if abs(dwd_um) > config.max_wd_step_um:
        dwd_um = math.copysign(config.max_wd_step_um, dwd_um)
        limited = True
    norm = math.hypot(*dstig)
    if norm > config.max_stig_step:
        f = config.max_stig_step / norm
        dstig = (dstig[0] * f, dstig[1] * f)
        limited = True
    return dwd_um, dstig, limited


def _read(ops: FocusOps) -> tuple[float, float, float]:
    p = ops.get_focus_params()
    try:
        values = (float(p["wd_mm"]), float(p["stigm_x"]), float(p["stigm_y"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AutofocusError(f"get_focus_params returned {p!r}: need wd_mm, stigm_x, stigm_y") from exc
    if not all(math.isfinite(v) for v in values):
        raise AutofocusError(f"get_focus_params returned non-finite values {p!r}")
    return values


class _Session:
    """State shared by one run: ops, config, counters, and the restore-on-failure guard."""

    def __init__(self, ops: FocusOps, config: AutofocusConfig) -> None:
        self.ops = ops
        self.config = config
        self.fov_um = config.pixel_size_nm * config.image_size_px * 1e-3
        self.shape = (config.image_size_px, config.image_size_px)
        self.images = 0

    def set(self, wd_mm: float | None = None, sx: float | None = None, sy: float | None = None) -> None:
        self.ops.set_focus_params(wd_mm=wd_mm, stigm_x=sx, stigm_y=sy)
        if self.config.settle_s > 0:
            time.sleep(self.config.settle_s)

    def acquire(self) -> NDArray[np.float32]:
        image = np.asarray(
            self.ops.acquire_image(fov_um=self.fov_um, shape=self.shape, dwell_s=self.config.dwell_us * 1e-6),
            dtype=np.float32,
        )
        self.images += 1
        if image.shape != self.shape:
            raise AutofocusError(f"acquire_image returned shape {image.shape}, expected {self.shape}")
        return image


def _learned_step(s: _Session, corrector: LearnedCorrector, wd: float) -> Correction:
    sigma_mm = s.config.perturbation_um * 1e-3
    s.set(wd_mm=wd - sigma_mm)
    minus = s.acquire()
    s.set(wd_mm=wd + sigma_mm)
    plus = s.acquire()
    c = corrector.predict(minus, plus, s.config.n_patches)
    if not all(math.isfinite(v) for v in (c.dwd_um, c.dstig_x, c.dstig_y)):
        raise AutofocusError(f"non-finite prediction {c}")
    return c


def _classical_round(s: _Session, round_index: int, state: list[float]) -> Correction:
    """One sweep round; moves ``state`` (wd, sx, sy) in place and returns the total change."""
    cfg = s.config
    start = list(state)

    def measure_wd(v: float) -> float:
        s.set(wd_mm=v)
        return sharpness(s.acquire())

    def fit_wd(center: float, half_um: float, points: int) -> None:
        values = center + np.linspace(-half_um, half_um, points) * 1e-3
        best, _ = sweep(values, measure_wd)
        dwd, _, _ = clip_correction((best - state[0]) * 1e3, (0.0, 0.0), cfg)
        state[0] += dwd * 1e-3
        s.set(wd_mm=state[0])

    def fit_stig(axis: int, half: float, points: int) -> None:
        def measure(v: float) -> float:
            s.set(sx=v) if axis == 1 else s.set(sy=v)
            return sharpness(s.acquire())

        best, _ = sweep(state[axis] + np.linspace(-half, half, points), measure)
        step = float(np.clip(best - state[axis], -cfg.max_stig_step, cfg.max_stig_step))
        state[axis] += step
        s.set(sx=state[1]) if axis == 1 else s.set(sy=state[2])

    shrink = 3.0**round_index
    if round_index == 0:
        coarse_half = cfg.sweep_range_um
        fit_wd(state[0], coarse_half, cfg.sweep_points)
        fine_half = 2.0 * coarse_half / (cfg.sweep_points - 1)
    else:
        fine_half = max(2.0 * cfg.perturbation_um / shrink, 1.0)
    fit_wd(state[0], fine_half, 5)
    stig_half = max(cfg.stig_sweep_range / shrink, 0.05)
    points = cfg.stig_sweep_points if round_index == 0 else 5
    fit_stig(1, stig_half, points)
    fit_stig(2, stig_half, points)
    fit_wd(state[0], max(fine_half / 2.0, 1.0), 5)
    return Correction((state[0] - start[0]) * 1e3, state[1] - start[1], state[2] - start[2])


def _resolve_method(config: AutofocusConfig) -> str:
    """'auto' means learned when torch and the weights are there, classical otherwise."""
    if config.method == "classical":
        return "classical"
    if config.method == "learned":
        if not torch_available():
            raise AutofocusError("method 'learned' needs torch: install em-agent[autofocus]")
        return "learned"
    weights = Path(config.weights_path) if config.weights_path else SHIPPED_WEIGHTS
    if torch_available() and weights.is_file():
        return "learned"
    _log.info("autofocus: using the classical baseline (torch or weights %s unavailable)", weights)
    return "classical"


def run_autofocus(ops: FocusOps, config: AutofocusConfig | None = None) -> AutofocusResult:
    """Run the autofocus on ``ops`` and return the result with its per-iteration trace.

    Raises :class:`AutofocusError` for unusable configuration, weights or device answers; device exceptions
    propagate unchanged after the focus read at the start of the failing iteration has been restored.
    """
    config = config or AutofocusConfig()
    method = _resolve_method(config)
    corrector: LearnedCorrector | None = None
    if method == "learned":
        corrector = LearnedCorrector(config.weights_path)
        corrector.check_config(config)
    s = _Session(ops, config)
    t_start = time.perf_counter()
    wd0, sx0, sy0 = _read(ops)
    initial = {"wd_mm": wd0, "stigm_x": sx0, "stigm_y": sy0}
    trace: list[AutofocusIteration] = []
    converged = False
    for index in range(config.max_iters):
        wd, sx, sy = _read(ops)
        t_iter, cpu_iter, images_before = time.perf_counter(), time.process_time(), s.images
        state = [wd, sx, sy]
        try:
            if corrector is not None:
                pred = _learned_step(s, corrector, wd)
                converged = (
                    abs(pred.dwd_um) < config.wd_tol_um
                    and max(abs(pred.dstig_x), abs(pred.dstig_y)) < config.stig_tol
                )
                dwd, dstig, limited = clip_correction(
                    config.gain_wd * pred.dwd_um,
                    (config.gain_stig * pred.dstig_x, config.gain_stig * pred.dstig_y),
                    config,
                )
                state = [wd + dwd * 1e-3, sx + dstig[0], sy + dstig[1]]
                s.set(wd_mm=state[0], sx=state[1], sy=state[2])
            else:
                pred = _classical_round(s, index, state)
                converged = (
                    abs(pred.dwd_um) < config.wd_tol_um
                    and max(abs(pred.dstig_x), abs(pred.dstig_y)) < config.stig_tol
                )
                dwd, dstig, limited = pred.dwd_um, (pred.dstig_x, pred.dstig_y), False
        except BaseException:
            _restore(ops, wd, sx, sy)
            raise
        trace.append(
            AutofocusIteration(
                index=index,
                wd_mm=wd,
                stigm_x=sx,
                stigm_y=sy,
                predicted_dwd_um=pred.dwd_um,
                predicted_dstig_x=pred.dstig_x,
                predicted_dstig_y=pred.dstig_y,
                spread_wd_um=pred.spread_wd_um,
                applied_dwd_um=dwd,
                applied_dstig_x=dstig[0],
                applied_dstig_y=dstig[1],
                limited=limited,
                images=s.images - images_before,
                elapsed_s=time.perf_counter() - t_iter,
                cpu_s=time.process_time() - cpu_iter,
            )
        )
        _log.debug("autofocus iteration %d: %s", index, trace[-1].model_dump())
        if converged:
            break
    wd1, sx1, sy1 = _read(ops)
    return AutofocusResult(
        converged=converged,
        method="learned" if corrector is not None else "classical",
        iterations=len(trace),
        images=s.images,
        initial=initial,
        final={"wd_mm": wd1, "stigm_x": sx1, "stigm_y": sy1},
        trace=trace,
        message="converged" if converged else f"not converged after {len(trace)} iterations",
        elapsed_s=time.perf_counter() - t_start,
    )


def _restore(ops: FocusOps, wd: float, sx: float, sy: float) -> None:
    try:
        ops.set_focus_params(wd_mm=wd, stigm_x=sx, stigm_y=sy)
    except Exception:
        # The original error matters more; the device may be unreachable, which is why we are here.
        _log.exception("autofocus: could not restore wd_mm=%s stigm_x=%s stigm_y=%s", wd, sx, sy)
