"""Autofocus and auto-stigmation: a learned corrector (torch, extra ``autofocus``) and a classical baseline.

:func:`run_autofocus` drives any :class:`FocusOps` (the Semphony ``ImagingDevice`` adapter, the simulator, the
:class:`OpticalBench`). This package imports without torch; the learned corrector loads it on first use.
"""

from agent.autofocus.bench import OpticalBench
from agent.autofocus.classical import parabola_vertex, sharpness
from agent.autofocus.dataset import TrainingSpec, generate_samples
from agent.autofocus.learned import (
    SHIPPED_WEIGHTS,
    Correction,
    LearnedCorrector,
    combine_predictions,
    torch_available,
)
from agent.autofocus.loop import clip_correction, run_autofocus
from agent.autofocus.models import AutofocusConfig, AutofocusError, AutofocusIteration, AutofocusResult
from agent.autofocus.ops import FocusOps

__all__ = [
    "SHIPPED_WEIGHTS",
    "AutofocusConfig",
    "AutofocusError",
    "AutofocusIteration",
    "AutofocusResult",
    "Correction",
    "FocusOps",
    "LearnedCorrector",
    "OpticalBench",
    "TrainingSpec",
    "clip_correction",
    "combine_predictions",
    "generate_samples",
    "parabola_vertex",
    "run_autofocus",
    "sharpness",
    "torch_available",
]
