"""Validation of the learned autofocus on one instrument: seeded defocus trials, learned vs classical.

Each trial draws a working-distance offset ``U(−wd_offset_um, +wd_offset_um)`` and stigmator offsets
``U(−stig_offset, +stig_offset)`` per axis (seeded: the same trials for the same seed), sets the instrument to the
reference focus plus that offset, and runs each method from there. A trial succeeds when the focus the method
leaves is within ``wd_tol_um`` and ``stig_tol`` of the reference. The reference is the true focus where the
device knows it (the simulator) and otherwise the focus found at the start, so on a real instrument the operator
focuses by hand first. Device errors end the trial as a failure with the message; they never end the validation.

The verdict: the learned corrector may be enabled when its success rate reaches ``min_success_rate`` and it
succeeds at least as often as the classical sweep (enabling it must never make autofocus worse there).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from agent.aio import run_unsuspended
from agent.autofocus.learned import SHIPPED_WEIGHTS, LearnedCorrector
from agent.autofocus.loop import run_autofocus_async
from agent.autofocus.models import AutofocusConfig, AutofocusError, AutofocusResult
from agent.autofocus.ops import AsyncFocusOps, FocusOps, as_async_focus_ops
from agent.autofocus.policy import InstrumentKey, MethodStats, ValidationVerdict, weights_digest

__all__ = [
    "METHODS",
    "FocusPoint",
    "TrialOutcome",
    "ValidationOptions",
    "ValidationReport",
    "run_validation",
    "run_validation_async",
]

Method = Literal["learned", "classical"]
#: The order each trial runs the methods in.
METHODS: tuple[Method, ...] = ("learned", "classical")


class FocusPoint(BaseModel):
    """A focus state: working distance (mm) and stigmators (the device's units)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    wd_mm: float
    stigm_x: float
    stigm_y: float

    @classmethod
    def read(cls, ops: FocusOps) -> FocusPoint:
        """The device's current focus."""
        return cls.from_params(ops.get_focus_params())

    @classmethod
    async def aread(cls, ops: AsyncFocusOps) -> FocusPoint:
        """The device's current focus, awaited."""
        return cls.from_params(await ops.get_focus_params())

    @classmethod
    def from_params(cls, p: Mapping[str, float]) -> FocusPoint:
        """From ``get_focus_params``'s answer."""
        return cls(wd_mm=float(p["wd_mm"]), stigm_x=float(p["stigm_x"]), stigm_y=float(p["stigm_y"]))


class ValidationOptions(BaseModel):
    """How many trials, how far out of focus they start, and what counts as success."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trials: int = Field(20, ge=1, le=1000, description="Trials (each runs both methods from the same start).")
    seed: int = Field(0, description="Seeds the start offsets: the same seed gives the same trials.")
    wd_offset_um: float = Field(50.0, gt=0, description="Start WD offsets are drawn from ±this, µm.")
    stig_offset: float = Field(
        1.0, ge=0, description="Start stigmator offsets are drawn from ±this per axis."
    )
    wd_tol_um: float = Field(1.0, gt=0, description="Success: final |WD − reference| below this, µm.")
    stig_tol: float = Field(0.2, gt=0, description="... and each final |stigmator − reference| below this.")
    min_success_rate: float = Field(
        0.9, gt=0, le=1, description="The learned corrector needs at least this success rate to be enabled."
    )
    autofocus: AutofocusConfig = Field(
        default_factory=AutofocusConfig, description="Autofocus settings (its 'method' is set per run)."
    )


class TrialOutcome(BaseModel):
    """One method's run in one trial."""

    model_config = ConfigDict(extra="forbid")

    trial: int
    method: Method
    start_offset: tuple[float, float, float] = Field(description="(ΔWD µm, Δstig x, Δstig y) at the start.")
    success: bool
    converged: bool = Field(description="The method itself reported convergence (not the same as success).")
    images: int
    elapsed_s: float
    final_wd_err_um: float | None = Field(description="|final WD − reference|, µm; None if unreadable.")
    final_stig_err: float | None = Field(description="max |final stigmator − reference|; None if unreadable.")
    error: str | None = None
    trace_images: list[int] = Field(description="Images acquired before each traced point.")
    trace_wd_err_um: list[float] = Field(description="|WD − reference| at each traced point, µm.")
    trace_stig_err: list[float] = Field(description="max |stigmator − reference| at each traced point.")


class ValidationReport(BaseModel):
    """Everything a validation measured, with the verdict it led to."""

    model_config = ConfigDict(extra="forbid")

    options: ValidationOptions
    reference: FocusPoint
    reference_source: str
    outcomes: list[TrialOutcome]
    verdict: ValidationVerdict

    def stats(self, method: Method) -> MethodStats:
        """The verdict's figures for ``method``."""
        return self.verdict.learned if method == "learned" else self.verdict.classical


class _CountingOps:
    """Passes through to the device and counts images, so a run that fails still reports what it cost."""

    def __init__(self, ops: AsyncFocusOps) -> None:
        self._ops = ops
        self.images = 0

    async def get_focus_params(self) -> Mapping[str, float]:
        return await self._ops.get_focus_params()

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        return await self._ops.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y)

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        self.images += 1
        return await self._ops.acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)


def _offsets(options: ValidationOptions) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng([options.seed, 0xAF7A])
    return [
        (
            float(rng.uniform(-options.wd_offset_um, options.wd_offset_um)),
            float(rng.uniform(-options.stig_offset, options.stig_offset)),
            float(rng.uniform(-options.stig_offset, options.stig_offset)),
        )
        for _ in range(options.trials)
    ]


def _errors(point: Mapping[str, float], ref: FocusPoint) -> tuple[float, float]:
    wd = abs(float(point["wd_mm"]) - ref.wd_mm) * 1e3
    stig = max(abs(float(point["stigm_x"]) - ref.stigm_x), abs(float(point["stigm_y"]) - ref.stigm_y))
    return wd, stig


async def _run_one(
    ops: AsyncFocusOps,
    ref: FocusPoint,
    trial: int,
    method: Method,
    offset: tuple[float, float, float],
    options: ValidationOptions,
) -> TrialOutcome:
    counting = _CountingOps(ops)
    start = {
        "wd_mm": ref.wd_mm + offset[0] * 1e-3,
        "stigm_x": ref.stigm_x + offset[1],
        "stigm_y": ref.stigm_y + offset[2],
    }
    t0 = time.perf_counter()
    result: AutofocusResult | None = None
    error: str | None = None
    try:
        await ops.set_focus_params(**start)
        result = await run_autofocus_async(counting, options.autofocus.model_copy(update={"method": method}))
    except (
        Exception
    ) as exc:  # a device or autofocus failure is this trial's outcome, not the validation's end
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t0
    final_wd: float | None = None
    final_stig: float | None = None
    try:
        final_wd, final_stig = _errors(await ops.get_focus_params(), ref)
    except Exception as exc:  # the trial already failed or is failing: keep the reason, count no success
        error = error or f"reading the final focus: {type(exc).__name__}: {exc}"
    images_trace: list[int] = [0]
    wd_trace, stig_trace = [_errors(start, ref)[0]], [_errors(start, ref)[1]]
    if result is not None:
        images_trace, wd_trace, stig_trace = [], [], []
        done = 0
        for it in result.trace:
            wd_err, stig_err = _errors({"wd_mm": it.wd_mm, "stigm_x": it.stigm_x, "stigm_y": it.stigm_y}, ref)
            images_trace.append(done)
            wd_trace.append(wd_err)
            stig_trace.append(stig_err)
            done += it.images
    if final_wd is not None and final_stig is not None:
        images_trace.append(counting.images)
        wd_trace.append(final_wd)
        stig_trace.append(final_stig)
    success = (
        error is None
        and final_wd is not None
        and final_stig is not None
        and final_wd < options.wd_tol_um
        and final_stig < options.stig_tol
    )
    return TrialOutcome(
        trial=trial,
        method=method,
        start_offset=offset,
        success=success,
        converged=bool(result is not None and result.converged),
        images=counting.images,
        elapsed_s=elapsed,
        final_wd_err_um=final_wd,
        final_stig_err=final_stig,
        error=error,
        trace_images=images_trace,
        trace_wd_err_um=wd_trace,
        trace_stig_err=stig_trace,
    )


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _stats(outcomes: list[TrialOutcome]) -> MethodStats:
    successes = sum(o.success for o in outcomes)
    errors = [o.error for o in outcomes if o.error is not None]
    return MethodStats(
        trials=len(outcomes),
        successes=successes,
        success_rate=successes / len(outcomes) if outcomes else 0.0,
        images_median=_median([float(o.images) for o in outcomes]),
        time_median_s=_median([o.elapsed_s for o in outcomes]),
        final_wd_err_um_median=_median(
            [o.final_wd_err_um for o in outcomes if o.final_wd_err_um is not None]
        ),
        final_stig_err_median=_median([o.final_stig_err for o in outcomes if o.final_stig_err is not None]),
        errors=len(errors),
        first_error=errors[0] if errors else None,
    )


def _judge(learned: MethodStats, classical: MethodStats, options: ValidationOptions) -> tuple[bool, str]:
    figures = (
        f"learned {learned.successes}/{learned.trials} ({learned.success_rate:.0%}), "
        f"classical {classical.successes}/{classical.trials} ({classical.success_rate:.0%})"
    )
    if learned.success_rate < options.min_success_rate:
        why = f"the learned corrector succeeded in fewer than {options.min_success_rate:.0%} of the trials"
        if classical.success_rate < options.min_success_rate:
            why += "; the classical sweep did not focus reliably either"
        return False, f"not enabled: {why} ({figures})"
    if learned.successes < classical.successes:
        return (
            False,
            f"not enabled: the learned corrector succeeded less often than the classical sweep ({figures})",
        )
    return (
        True,
        f"may be enabled: the learned corrector is at least as reliable as the classical sweep ({figures})",
    )


def run_validation(
    ops: FocusOps,
    key: InstrumentKey,
    options: ValidationOptions | None = None,
    *,
    reference: FocusPoint | None = None,
    reference_source: str | None = None,
    progress: Callable[[TrialOutcome], None] | None = None,
) -> ValidationReport:
    """:func:`run_validation_async` over synchronous ``ops`` (the synchronous SDK, a bench), without a loop."""
    return run_unsuspended(
        run_validation_async(
            as_async_focus_ops(ops),
            key,
            options,
            reference=reference,
            reference_source=reference_source,
            progress=progress,
        )
    )


async def run_validation_async(
    ops: AsyncFocusOps,
    key: InstrumentKey,
    options: ValidationOptions | None = None,
    *,
    reference: FocusPoint | None = None,
    reference_source: str | None = None,
    progress: Callable[[TrialOutcome], None] | None = None,
) -> ValidationReport:
    """Run the seeded trials on ``ops`` and return the report with its verdict (not yet recorded).

    ``reference`` is the in-focus state (default: the focus read now). The instrument is left at the reference
    afterwards, also when a trial failed.
    """
    options = options or ValidationOptions()
    source = reference_source or ("given" if reference is not None else "the focus found at the start")
    ref = reference if reference is not None else await FocusPoint.aread(ops)
    weights = Path(options.autofocus.weights_path) if options.autofocus.weights_path else SHIPPED_WEIGHTS
    # Load the network once before timing anything: its one-off load (seconds) is not a cost of a trial.
    with contextlib.suppress(AutofocusError):
        LearnedCorrector(options.autofocus.weights_path)
    outcomes: list[TrialOutcome] = []
    try:
        for trial, offset in enumerate(_offsets(options)):
            for method in METHODS:
                outcome = await _run_one(ops, ref, trial, method, offset, options)
                outcomes.append(outcome)
                if progress is not None:
                    progress(outcome)
    finally:
        await ops.set_focus_params(wd_mm=ref.wd_mm, stigm_x=ref.stigm_x, stigm_y=ref.stigm_y)
    learned = _stats([o for o in outcomes if o.method == "learned"])
    classical = _stats([o for o in outcomes if o.method == "classical"])
    enabled, reason = _judge(learned, classical, options)
    verdict = ValidationVerdict(
        backend=key.backend,
        instrument=key.instrument,
        enabled=enabled,
        reason=reason,
        weights=str(weights),
        weights_sha256=weights_digest(weights) if weights.is_file() else "missing",
        trials=options.trials,
        seed=options.seed,
        learned=learned,
        classical=classical,
        recorded_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return ValidationReport(
        options=options, reference=ref, reference_source=source, outcomes=outcomes, verdict=verdict
    )
