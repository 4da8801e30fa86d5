"""Autofocus and auto-stigmation: a learned corrector (torch, extra ``autofocus``) and a classical baseline.

:func:`run_autofocus_async` awaits any :class:`AsyncFocusOps` (the device facade's adapter: the daemon's path);
:func:`run_autofocus` runs the same loop over synchronous :class:`FocusOps` (the synchronous SDK's adapter, the
optical bench). This package imports without torch; the learned corrector loads it on first use. The bench
(:class:`agent.autofocus.bench.OpticalBench`, built on the simulator's optics) is imported from its module, so
that importing this package never loads the simulator.
"""

from agent.autofocus.classical import parabola_vertex, sharpness
from agent.autofocus.dataset import TrainingSpec, generate_samples
from agent.autofocus.learned import (
    SHIPPED_WEIGHTS,
    Correction,
    LearnedCorrector,
    combine_predictions,
    torch_available,
)
from agent.autofocus.loop import clip_correction, run_autofocus, run_autofocus_async
from agent.autofocus.models import AutofocusConfig, AutofocusError, AutofocusIteration, AutofocusResult
from agent.autofocus.ops import AsyncFocusOps, FocusOps, as_async_focus_ops

__all__ = [
    "SHIPPED_WEIGHTS",
    "AsyncFocusOps",
    "AutofocusConfig",
    "AutofocusError",
    "AutofocusIteration",
    "AutofocusResult",
    "Correction",
    "FocusOps",
    "LearnedCorrector",
    "TrainingSpec",
    "as_async_focus_ops",
    "clip_correction",
    "combine_predictions",
    "generate_samples",
    "parabola_vertex",
    "run_autofocus",
    "run_autofocus_async",
    "sharpness",
    "torch_available",
]
