"""A stage bench over the simulator optics implementing :class:`RoiOps`, for tests and benchmarks.

It models what ROI relocation must cope with: the sample's placement on the stage (offset and rotation,
unknown after a reload), a magnification calibration error (true FOV = nominal × (1 + ``fov_error``)),
positioning error on each move, drift between frames, defocus and shot noise. Stage coordinates are mm; the
specimen point under the beam is ``R(placement_rotation)·(stage + error − placement_offset)`` and the image is
rotated by ``image_rotation + placement_rotation`` in the specimen frame, matching :mod:`agent.roi.ops`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from agent.devices.simulator.optics import Specimen, render_image

__all__ = ["StageBench"]


class StageBench:
    """Stage, scan rotation and imaging over a :class:`Specimen` with hidden placement and errors."""

    def __init__(
        self,
        *,
        seed: int = 0,
        specimen: Specimen | None = None,
        stage_mm: tuple[float, float] = (0.0, 0.0),
        placement_offset_mm: tuple[float, float] = (0.0, 0.0),
        placement_rotation_rad: float = 0.0,
        fov_error: float = 0.0,
        positioning_error_um: float = 0.0,
        drift_nm_per_frame: tuple[float, float] = (0.0, 0.0),
        defocus_um: float = 0.0,
    ) -> None:
        """Create a bench; ``seed`` drives the specimen (unless given) and all random errors."""
        self.specimen = specimen if specimen is not None else Specimen(seed)
        self.stage = list(stage_mm)
        self.placement_offset_mm = placement_offset_mm
        self.placement_rotation_rad = placement_rotation_rad
        self.fov_error = fov_error
        self.positioning_error_um = positioning_error_um
        self.drift_nm_per_frame = drift_nm_per_frame
        self.defocus_um = defocus_um
        self.image_rotation_rad = 0.0
        self.fov_um = 100.0
        self.rng = np.random.default_rng([seed, 0x5A6E])
        self._error_mm = (0.0, 0.0)
        self._drift_mm = [0.0, 0.0]
        self.frames = 0
        self.moves = 0

    def specimen_point_m(self, stage_mm: tuple[float, float] | None = None) -> tuple[float, float]:
        """Specimen coordinates (m) under the beam for a stage position (default: now, errors included)."""
        sx, sy = (
            stage_mm
            if stage_mm is not None
            else (
                self.stage[0] + self._error_mm[0] + self._drift_mm[0],
                self.stage[1] + self._error_mm[1] + self._drift_mm[1],
            )
        )
        dx, dy = sx - self.placement_offset_mm[0], sy - self.placement_offset_mm[1]
        c, s = math.cos(self.placement_rotation_rad), math.sin(self.placement_rotation_rad)
        return ((c * dx - s * dy) * 1e-3, (s * dx + c * dy) * 1e-3)

    def get_pos(self) -> Mapping[str, float]:
        """Encoder reading: the commanded position (errors are invisible)."""
        return {"x": self.stage[0], "y": self.stage[1], "z": 10.0, "r": 0.0, "t": 0.0}

    def _land(self) -> None:
        self.moves += 1
        sigma = self.positioning_error_um * 1e-3
        err = self.rng.normal(0.0, sigma, 2) if sigma > 0 else np.zeros(2)
        self._error_mm = (float(err[0]), float(err[1]))

    def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> object:
        """Absolute move; lands with a fresh positioning error."""
        self.stage = [float(x), float(y)]
        self._land()
        return self.get_pos()

    def move_delta(self, dx: float = 0.0, dy: float = 0.0) -> object:
        """Relative move; lands with a fresh positioning error."""
        self.stage = [self.stage[0] + float(dx), self.stage[1] + float(dy)]
        self._land()
        return self.get_pos()

    def set_view_field(self, fov_um: float) -> object:
        """Set the nominal field of view."""
        if not fov_um > 0:
            raise ValueError(f"fov_um must be positive, got {fov_um}")
        self.fov_um = float(fov_um)
        return {"fov_um": self.fov_um}

    def get_image_rotation_rad(self) -> float:
        """Angle of the image axes in the stage frame."""
        return self.image_rotation_rad

    def set_image_rotation_rad(self, angle_rad: float) -> object:
        """Rotate the scan."""
        self.image_rotation_rad = float(angle_rad)
        return {"image_rotation_rad": self.image_rotation_rad}

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        """Render a frame; drift advances by one step per frame."""
        self.fov_um = float(fov_um)
        self.frames += 1
        self._drift_mm[0] += self.drift_nm_per_frame[0] * 1e-6
        self._drift_mm[1] += self.drift_nm_per_frame[1] * 1e-6
        return render_image(
            self.specimen,
            center_m=self.specimen_point_m(),
            fov_m=fov_um * 1e-6 * (1.0 + self.fov_error),
            scan_rotation_rad=self.image_rotation_rad + self.placement_rotation_rad,
            shape=shape,
            defocus_m=self.defocus_um * 1e-6,
            stig=(0.0, 0.0),
            dwell_s=dwell_s,
            rng=self.rng,
        )
