"""An optical bench: a minimal focus state over the simulator optics, implementing :class:`FocusOps`.

It is the data source of the training script and the harness of the unit tests: a specimen, a hidden in-focus
working distance and hidden ideal stigmator values, and an image counter. It models nothing else (no stage, no
vacuum, no timing); the full instrument is :class:`agent.devices.simulator.sem.SemSimulator`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from agent.devices.simulator.optics import DEFAULT_OPTICS, OpticsParams, Specimen, render_image

__all__ = ["OpticalBench"]


class OpticalBench:
    """A focus-state harness: ``wd_mm``/``stigm_*`` are the settings, ``true_*`` the hidden optimum."""

    def __init__(
        self,
        *,
        seed: int = 0,
        true_wd_mm: float = 5.0,
        ideal_stig: tuple[float, float] = (0.0, 0.0),
        wd_mm: float = 5.0,
        stig: tuple[float, float] = (0.0, 0.0),
        center_m: tuple[float, float] = (0.0, 0.0),
        scan_rotation_rad: float = 0.0,
        optics: OpticsParams = DEFAULT_OPTICS,
        specimen: Specimen | None = None,
    ) -> None:
        """Create a bench; ``seed`` drives the specimen (unless given) and the noise."""
        self.specimen = specimen if specimen is not None else Specimen(seed)
        self.true_wd_mm = true_wd_mm
        self.ideal_stig = ideal_stig
        self.wd_mm = wd_mm
        self.stigm_x, self.stigm_y = stig
        self.center_m = center_m
        self.scan_rotation_rad = scan_rotation_rad
        self.optics = optics
        self.rng = np.random.default_rng([seed, 0xB3AC])
        self.images = 0
        self.set_calls = 0

    @property
    def wd_error_um(self) -> float:
        """Setting minus optimum, µm."""
        return (self.wd_mm - self.true_wd_mm) * 1e3

    @property
    def stig_error(self) -> tuple[float, float]:
        """Setting minus optimum, stigmator units."""
        return (self.stigm_x - self.ideal_stig[0], self.stigm_y - self.ideal_stig[1])

    def get_focus_params(self) -> Mapping[str, float]:
        """Current settings."""
        return {"wd_mm": self.wd_mm, "stigm_x": self.stigm_x, "stigm_y": self.stigm_y}

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        """Change the given settings."""
        self.set_calls += 1
        if wd_mm is not None:
            self.wd_mm = float(wd_mm)
        if stigm_x is not None:
            self.stigm_x = float(stigm_x)
        if stigm_y is not None:
            self.stigm_y = float(stigm_y)
        return self.get_focus_params()

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        """Render a frame at the current settings."""
        self.images += 1
        return render_image(
            self.specimen,
            center_m=self.center_m,
            fov_m=fov_um * 1e-6,
            scan_rotation_rad=self.scan_rotation_rad,
            shape=shape,
            defocus_m=self.wd_error_um * 1e-6,
            stig=self.stig_error,
            dwell_s=dwell_s,
            rng=self.rng,
            optics=self.optics,
        )
