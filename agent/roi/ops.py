"""The device operations ROI save/find need: a small synchronous protocol and its asynchronous twin.

Units are Semphony's: stage in mm (x, y, z) and degrees (r, t), field of view in µm. Rotation is the angle of
the image axes in the stage frame: an image offset ``(u, v)`` (along columns, rows) from the image centre lies
at stage offset ``R(angle)·(u, v)`` from the stage position, so moving the stage by that offset centres it.
For the SEM simulator this angle is ``scan rotation − stage r``; on a real instrument it is the calibrated
scan rotation relative to the stage axes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AsyncRoiOps",
    "AsyncRotatableRoiOps",
    "RoiOps",
    "RotatableRoiOps",
    "SyncRoiOps",
    "SyncRotatableRoiOps",
    "as_async_roi_ops",
]


@runtime_checkable
class RoiOps(Protocol):
    """Stage, field of view and acquisition."""

    def get_pos(self) -> Mapping[str, float]:
        """Live stage position ``{x, y, z, r, t}``."""
        ...

    def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> object:
        """Absolute stage move (mm, degrees)."""
        ...

    def move_delta(self, dx: float = 0.0, dy: float = 0.0) -> object:
        """Relative stage move (mm)."""
        ...

    def set_view_field(self, fov_um: float) -> object:
        """Set the field of view (µm)."""
        ...

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        """Acquire one frame at the current stage position: float32 ``shape`` array, about [0, 1]."""
        ...


@runtime_checkable
class RotatableRoiOps(RoiOps, Protocol):
    """:class:`RoiOps` that can also read and set the image rotation.

    Without these two methods the image axes are taken to be the stage axes and a measured rotation is
    reported but not corrected.
    """

    def get_image_rotation_rad(self) -> float:
        """Angle of the image axes in the stage frame (see the module docstring)."""
        ...

    def set_image_rotation_rad(self, angle_rad: float) -> object:
        """Rotate the scan so that the image axes make ``angle_rad`` with the stage axes."""
        ...


@runtime_checkable
class AsyncRoiOps(Protocol):
    """:class:`RoiOps` as coroutines (what ROI capture and relocation await)."""

    async def get_pos(self) -> Mapping[str, float]:
        """Live stage position ``{x, y, z, r, t}``."""
        ...

    async def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> object:
        """Absolute stage move (mm, degrees)."""
        ...

    async def move_delta(self, dx: float = 0.0, dy: float = 0.0) -> object:
        """Relative stage move (mm)."""
        ...

    async def set_view_field(self, fov_um: float) -> object:
        """Set the field of view (µm)."""
        ...

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        """Acquire one frame at the current stage position."""
        ...


@runtime_checkable
class AsyncRotatableRoiOps(AsyncRoiOps, Protocol):
    """:class:`RotatableRoiOps` as coroutines."""

    async def get_image_rotation_rad(self) -> float:
        """Angle of the image axes in the stage frame (see the module docstring)."""
        ...

    async def set_image_rotation_rad(self, angle_rad: float) -> object:
        """Rotate the scan so that the image axes make ``angle_rad`` with the stage axes."""
        ...


class SyncRoiOps:
    """:class:`AsyncRoiOps` over synchronous :class:`RoiOps`: each coroutine calls through at once, so a
    capture or search over them runs without an event loop (:func:`agent.aio.run_unsuspended`)."""

    def __init__(self, ops: RoiOps) -> None:
        self.ops = ops

    async def get_pos(self) -> Mapping[str, float]:
        """The wrapped operation."""
        return self.ops.get_pos()

    async def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> object:
        """The wrapped operation."""
        return self.ops.move_to(x, y, z, r)

    async def move_delta(self, dx: float = 0.0, dy: float = 0.0) -> object:
        """The wrapped operation."""
        return self.ops.move_delta(dx, dy)

    async def set_view_field(self, fov_um: float) -> object:
        """The wrapped operation."""
        return self.ops.set_view_field(fov_um)

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        """The wrapped operation."""
        return self.ops.acquire_image(fov_um=fov_um, shape=shape, dwell_s=dwell_s)


class SyncRotatableRoiOps(SyncRoiOps):
    """:class:`AsyncRotatableRoiOps` over synchronous :class:`RotatableRoiOps`."""

    def __init__(self, ops: RotatableRoiOps) -> None:
        super().__init__(ops)
        self.rotatable = ops

    async def get_image_rotation_rad(self) -> float:
        """The wrapped operation."""
        return self.rotatable.get_image_rotation_rad()

    async def set_image_rotation_rad(self, angle_rad: float) -> object:
        """The wrapped operation."""
        return self.rotatable.set_image_rotation_rad(angle_rad)


def as_async_roi_ops(ops: RoiOps) -> AsyncRoiOps:
    """Wrap synchronous ROI operations; rotation control is kept when ``ops`` has it."""
    if isinstance(ops, RotatableRoiOps):
        return SyncRotatableRoiOps(ops)
    return SyncRoiOps(ops)
