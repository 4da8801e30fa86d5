"""The device operations the autofocus needs (a small synchronous protocol).

The Semphony ``ImagingDevice`` adapter, the SEM simulator and :class:`agent.autofocus.bench.OpticalBench`
implement it. Units are Semphony's: working distance in mm, stigmators in the device's stigmator units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["FocusOps"]


@runtime_checkable
class FocusOps(Protocol):
    """Read and set the focus, and acquire an image at the current focus."""

    def get_focus_params(self) -> Mapping[str, float]:
        """Return ``{"wd_mm": ..., "stigm_x": ..., "stigm_y": ...}``."""
        ...

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        """Set the given values (``None`` keeps the current one)."""
        ...

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        """Acquire one frame at the current stage position and focus: float32 ``shape`` array, about [0, 1]."""
        ...
