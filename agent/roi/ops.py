"""The device operations ROI save/find need (a small synchronous protocol).

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

__all__ = ["RoiOps", "RotatableRoiOps"]


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
