"""Training data for the learned corrector, generated from the simulator optics (numpy only).

Each sample is a patch pair of one view at ``WD − sigma`` and ``WD + sigma`` and its target: the correction
that brings the focus to the optimum (``−defocus`` in µm, ``−stig`` in stigmator units). Views are drawn over
many specimens, positions, scan rotations, dwell times (noise levels), defocus and astigmatism values; half
the samples sit near focus, where the last iteration's accuracy is decided.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from agent.autofocus.patches import normalize_pairs
from agent.devices.simulator.optics import DEFAULT_OPTICS, OpticsParams, Specimen, render_image

__all__ = ["TrainingSpec", "generate_samples"]


@dataclass(frozen=True)
class TrainingSpec:
    """What the training data covers; stored in the weights file so inference can check its inputs."""

    pixel_size_nm: float = 10.0
    patch_px: int = 64
    perturbation_um: float = 5.0
    wd_range_um: float = 75.0
    near_wd_range_um: float = 8.0
    stig_range: float = 2.5
    near_stig_range: float = 0.4
    near_fraction: float = 0.5
    dwell_us_range: tuple[float, float] = (0.3, 3.0)
    stage_range_m: float = 20e-3
    n_specimens: int = 32

    def as_dict(self) -> dict[str, object]:
        """A JSON/torch-serialisable form."""
        return asdict(self)


def generate_samples(
    n_views: int,
    rng: np.random.Generator,
    spec: TrainingSpec = TrainingSpec(),
    *,
    optics: OpticsParams = DEFAULT_OPTICS,
    specimen_seed_base: int = 1000,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Render ``n_views`` views, each cut into 4 patch pairs: returns ``x (4n, 2, P, P)``, ``y (4n, 3)``.

    ``y`` columns are the WD correction (µm) and the two stigmator corrections (units).
    """
    if n_views < 1:
        raise ValueError("n_views must be >= 1")
    p = spec.patch_px
    side = 2 * p
    fov_m = spec.pixel_size_nm * 1e-9 * side
    specimens: dict[int, Specimen] = {}
    xs = np.empty((4 * n_views, 2, p, p), dtype=np.float32)
    ys = np.empty((4 * n_views, 3), dtype=np.float32)
    for i in range(n_views):
        seed = specimen_seed_base + int(rng.integers(0, spec.n_specimens))
        specimen = specimens.get(seed)
        if specimen is None:
            specimen = specimens[seed] = Specimen(seed)
        near = rng.random() < spec.near_fraction
        wd_r = spec.near_wd_range_um if near else spec.wd_range_um
        st_r = spec.near_stig_range if near else spec.stig_range
        defocus_um = float(rng.uniform(-wd_r, wd_r))
        stig = (float(rng.uniform(-st_r, st_r)), float(rng.uniform(-st_r, st_r)))
        dwell_s = math.exp(rng.uniform(*np.log(spec.dwell_us_range))) * 1e-6
        center = (
            float(rng.uniform(-1, 1)) * spec.stage_range_m,
            float(rng.uniform(-1, 1)) * spec.stage_range_m,
        )
        rotation = float(rng.uniform(0.0, 2.0 * math.pi))
        pair = []
        for sign in (-1.0, 1.0):
            pair.append(
                render_image(
                    specimen,
                    center_m=center,
                    fov_m=fov_m,
                    scan_rotation_rad=rotation,
                    shape=(side, side),
                    defocus_m=(defocus_um + sign * spec.perturbation_um) * 1e-6,
                    stig=stig,
                    dwell_s=dwell_s,
                    rng=rng,
                    optics=optics,
                )
            )
        for k, (y0, x0) in enumerate(((0, 0), (0, p), (p, 0), (p, p))):
            xs[4 * i + k, 0] = pair[0][y0 : y0 + p, x0 : x0 + p]
            xs[4 * i + k, 1] = pair[1][y0 : y0 + p, x0 : x0 + p]
            ys[4 * i + k] = (-defocus_um, -stig[0], -stig[1])
    return normalize_pairs(xs), ys
