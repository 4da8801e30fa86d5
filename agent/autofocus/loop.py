"""The autofocus loop: measure, predict, cap, apply with gain, repeat (sem-reference §6–7, §9).

Learned iteration (DeepFocus pattern): read WD and stigmators; acquire at ``WD − sigma`` and ``WD + sigma``;
predict the correction over several patch pairs; stop when it is below tolerance (the small correction is still
applied); clip it to the safety caps; apply it with the gains. Classical iteration: one round of sharpness
sweeps (see :mod:`agent.autofocus.classical`), each step clipped to the same caps. If anything fails mid-
iteration the working distance and stigmators read at its start are restored before the error propagates.

The loop is a coroutine over :class:`~agent.autofocus.ops.AsyncFocusOps`: the daemon awaits it on its own event
loop, where a time limit or a stop cancels it at the device call it waits on (the focus is then restored). The
predictions and sharpness measures are pure computation and stay synchronous. :func:`run_autofocus` runs the
same coroutine over synchronous :class:`~agent.autofocus.ops.FocusOps` (benches, scripts) without a loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.aio import run_unsuspended
from agent.autofocus.classical import parabola_vertex, sharpness
from agent.autofocus.learned import Correction, LearnedCorrector, torch_available
from agent.autofocus.models import AutofocusConfig, AutofocusError, AutofocusIteration, AutofocusResult
from agent.autofocus.ops import AsyncFocusOps, FocusOps, as_async_focus_ops
from agent.autofocus.policy import InstrumentKey, MethodChoice, choose_auto_method

__all__ = ["clip_correction", "run_autofocus", "run_autofocus_async"]

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


async def _read(ops: AsyncFocusOps) -> tuple[float, float, float]:
    p = await ops.get_focus_params()
    try:
        values = (float(p["wd_mm"]), float(p["stigm_x"]), float(p["stigm_y"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AutofocusError(f"get_focus_params returned {p!r}: need wd_mm, stigm_x, stigm_y") from exc
    if not all(math.isfinite(v) for v in values):
        raise AutofocusError(f"get_focus_params returned non-finite values {p!r}")
    return values


class _Session:
    """State shared by one run: ops, config, counters, and the restore-on-failure guard."""

    def __init__(
        self, ops: AsyncFocusOps, config: AutofocusConfig, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self.ops = ops
        self.sleep = sleep
        self.config = config
        self.fov_um = config.pixel_size_nm * config.image_size_px * 1e-3
        self.shape = (config.image_size_px, config.image_size_px)
        self.images = 0

    async def set(self, wd_mm: float | None = None, sx: float | None = None, sy: float | None = None) -> None:
        await self.ops.set_focus_params(wd_mm=wd_mm, stigm_x=sx, stigm_y=sy)
        if self.config.settle_s > 0:
            await self.sleep(self.config.settle_s)

    async def acquire(self) -> NDArray[np.float32]:
        image = np.asarray(
            await self.ops.acquire_image(
                fov_um=self.fov_um, shape=self.shape, dwell_s=self.config.dwell_us * 1e-6
            ),
            dtype=np.float32,
        )
        self.images += 1
        if image.shape != self.shape:
            raise AutofocusError(f"acquire_image returned shape {image.shape}, expected {self.shape}")
        return image


async def _learned_step(s: _Session, corrector: LearnedCorrector, wd: float) -> Correction:
    sigma_mm = s.config.perturbation_um * 1e-3
    await s.set(wd_mm=wd - sigma_mm)
    minus = await s.acquire()
    await s.set(wd_mm=wd + sigma_mm)
    plus = await s.acquire()
    c = corrector.predict(minus, plus, s.config.n_patches)
    if not all(math.isfinite(v) for v in (c.dwd_um, c.dstig_x, c.dstig_y)):
        raise AutofocusError(f"non-finite prediction {c}")
    return c


async def _sweep(values: NDArray[np.float64], measure: Callable[[float], Awaitable[float]]) -> float:
    """:func:`agent.autofocus.classical.sweep` with an awaited measurement: the fitted optimum."""
    scores = np.array([await measure(float(v)) for v in values], dtype=np.float64)
    return parabola_vertex(values, scores)


async def _classical_round(s: _Session, round_index: int, state: list[float]) -> Correction:
    """One sweep round; moves ``state`` (wd, sx, sy) in place and returns the total change."""
    cfg = s.config
    start = list(state)

    async def measure_wd(v: float) -> float:
        await s.set(wd_mm=v)
        return sharpness(await s.acquire())

    async def fit_wd(center: float, half_um: float, points: int) -> None:
        values = center + np.linspace(-half_um, half_um, points) * 1e-3
        best = await _sweep(values, measure_wd)
        dwd, _, _ = clip_correction((best - state[0]) * 1e3, (0.0, 0.0), cfg)
        state[0] += dwd * 1e-3
        await s.set(wd_mm=state[0])

    async def fit_stig(axis: int, half: float, points: int) -> None:
        async def measure(v: float) -> float:
            await (s.set(sx=v) if axis == 1 else s.set(sy=v))
            return sharpness(await s.acquire())

        best = await _sweep(state[axis] + np.linspace(-half, half, points), measure)
        step = float(np.clip(best - state[axis], -cfg.max_stig_step, cfg.max_stig_step))
        state[axis] += step
        await (s.set(sx=state[1]) if axis == 1 else s.set(sy=state[2]))

    shrink = 3.0**round_index
    if round_index == 0:
        coarse_half = cfg.sweep_range_um
        await fit_wd(state[0], coarse_half, cfg.sweep_points)
        fine_half = 2.0 * coarse_half / (cfg.sweep_points - 1)
    else:
        fine_half = max(2.0 * cfg.perturbation_um / shrink, 1.0)
    await fit_wd(state[0], fine_half, 5)
    stig_half = max(cfg.stig_sweep_range / shrink, 0.05)
    points = cfg.stig_sweep_points if round_index == 0 else 5
    await fit_stig(1, stig_half, points)
    await fit_stig(2, stig_half, points)
    await fit_wd(state[0], max(fine_half / 2.0, 1.0), 5)
    return Correction((state[0] - start[0]) * 1e3, state[1] - start[1], state[2] - start[2])


def _resolve_method(
    config: AutofocusConfig, instrument: InstrumentKey | None, state_dir: Path | None
) -> MethodChoice:
    """An explicit method is used as asked; 'auto' follows :func:`agent.autofocus.policy.choose_auto_method`."""
    if config.method == "classical":
        return MethodChoice("classical", "classical (requested)")
    if config.method == "learned":
        if not torch_available():
            raise AutofocusError("method 'learned' needs torch: install em-agent[autofocus]")
        return MethodChoice("learned", "learned (requested)")
    choice = choose_auto_method(instrument, state_dir, config.weights_path)
    _log.info("autofocus: %s", choice.reason)
    return choice


def run_autofocus(
    ops: FocusOps,
    config: AutofocusConfig | None = None,
    *,
    instrument: InstrumentKey | None = None,
    state_dir: Path | None = None,
) -> AutofocusResult:
    """Run the autofocus on synchronous ``ops`` (a bench, the synchronous SDK) without an event loop.

    The same loop as :func:`run_autofocus_async`; the settling pause blocks, as the operations do.
    """
    return run_unsuspended(
        _run(
            as_async_focus_ops(ops),
            config,
            instrument=instrument,
            state_dir=state_dir,
            sleep=_blocking_sleep,
        )
    )


async def run_autofocus_async(
    ops: AsyncFocusOps,
    config: AutofocusConfig | None = None,
    *,
    instrument: InstrumentKey | None = None,
    state_dir: Path | None = None,
) -> AutofocusResult:
    """Run the autofocus on ``ops`` and return the result with its per-iteration trace.

    ``instrument`` and ``state_dir`` matter only for ``method = "auto"``: the learned corrector runs only on an
    instrument it is validated for (:mod:`agent.autofocus.policy`); without them ``auto`` is the classical sweep.

    Raises :class:`AutofocusError` for unusable configuration, weights or device answers; device exceptions
    propagate unchanged after the focus read at the start of the failing iteration has been restored.
    """
    return await _run(ops, config, instrument=instrument, state_dir=state_dir, sleep=asyncio.sleep)


async def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - only ever run by run_unsuspended, where no event loop runs


async def _run(
    ops: AsyncFocusOps,
    config: AutofocusConfig | None,
    *,
    instrument: InstrumentKey | None,
    state_dir: Path | None,
    sleep: Callable[[float], Awaitable[None]],
) -> AutofocusResult:
    config = config or AutofocusConfig()
    choice = _resolve_method(config, instrument, state_dir)
    method = choice.method
    corrector: LearnedCorrector | None = None
    if method == "learned":
        corrector = LearnedCorrector(config.weights_path)
        corrector.check_config(config)
    s = _Session(ops, config, sleep)
    t_start = time.perf_counter()
    wd0, sx0, sy0 = await _read(ops)
    initial = {"wd_mm": wd0, "stigm_x": sx0, "stigm_y": sy0}
    trace: list[AutofocusIteration] = []
    converged = False
    for index in range(config.max_iters):
        wd, sx, sy = await _read(ops)
        t_iter, cpu_iter, images_before = time.perf_counter(), time.process_time(), s.images
        state = [wd, sx, sy]
        try:
            if corrector is not None:
                pred = await _learned_step(s, corrector, wd)
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
                await s.set(wd_mm=state[0], sx=state[1], sy=state[2])
            else:
                pred = await _classical_round(s, index, state)
                converged = (
                    abs(pred.dwd_um) < config.wd_tol_um
                    and max(abs(pred.dstig_x), abs(pred.dstig_y)) < config.stig_tol
                )
                dwd, dstig, limited = pred.dwd_um, (pred.dstig_x, pred.dstig_y), False
        except BaseException:
            # Also on cancellation (a time limit, a stop): the column is left as this iteration found it.
            await _bounded_restore(ops, wd, sx, sy)
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
    wd1, sx1, sy1 = await _read(ops)
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
        selection=choice.reason,
    )


#: How long restoring the focus may take after a failure or a cancellation, on an event loop: a device that hangs
#: must not hold up the time limit or the stop that cancelled the autofocus.
RESTORE_TIMEOUT_S = 10.0


async def _bounded_restore(ops: AsyncFocusOps, wd: float, sx: float, sy: float) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # Run without an event loop (synchronous operations): nothing cancels it and nothing can bound it.
        await _restore(ops, wd, sx, sy)
        return
    try:
        async with asyncio.timeout(RESTORE_TIMEOUT_S):
            await _restore(ops, wd, sx, sy)
    except TimeoutError:
        _log.error("autofocus: restoring the focus did not finish within %s s", RESTORE_TIMEOUT_S)


async def _restore(ops: AsyncFocusOps, wd: float, sx: float, sy: float) -> None:
    try:
        await ops.set_focus_params(wd_mm=wd, stigm_x=sx, stigm_y=sy)
    except Exception:
        # The original error matters more; the device may be unreachable, which is why we are here.
        _log.exception("autofocus: could not restore wd_mm=%s stigm_x=%s stigm_y=%s", wd, sx, sy)
