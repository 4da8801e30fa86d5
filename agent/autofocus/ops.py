"""The device operations the autofocus needs: a synchronous protocol and its asynchronous twin.

The loop itself awaits :class:`AsyncFocusOps` (the device layer's facade implements it, so the daemon never
blocks its loop on the microscope). Synchronous implementations (:class:`agent.autofocus.bench.OpticalBench`,
the synchronous SDK's adapter) implement :class:`FocusOps` and are wrapped with :func:`as_async_focus_ops`.
Units are Semphony's: working distance in mm, stigmators in the device's stigmator units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["AsyncFocusOps", "FocusOps", "SyncFocusOps", "as_async_focus_ops"]


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


class AsyncFocusOps(Protocol):
    """:class:`FocusOps` as coroutines (what the autofocus loop awaits)."""

    async def get_focus_params(self) -> Mapping[str, float]:
        """Return ``{"wd_mm": ..., "stigm_x": ..., "stigm_y": ...}``."""
        ...

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        """Set the given values (``None`` keeps the current one)."""
        ...

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        """Acquire one frame at the current stage position and focus."""
        ...


class SyncFocusOps:
    """:class:`AsyncFocusOps` over synchronous :class:`FocusOps`: each coroutine calls through at once.

    Its coroutines never suspend, so a loop over them also runs without an event loop
    (:func:`agent.aio.run_unsuspended`); only pure computation and in-memory benches should be wrapped for use
    on a running loop.
    """

    def __init__(self, ops: FocusOps) -> None:
        self.ops = ops

    async def get_focus_params(self) -> Mapping[str, float]:
        """The wrapped operation."""
        return self.ops.get_focus_params()

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        """The wrapped operation."""
        return self.ops.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y)

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        """The wrapped operation."""
        return self.ops.acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)


def as_async_focus_ops(ops: FocusOps) -> AsyncFocusOps:
    """Wrap synchronous focus operations (a bench, the synchronous SDK adapter) for the loop."""
    return SyncFocusOps(ops)
