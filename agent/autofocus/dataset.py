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

from agent.autofocus.patches import patch_grid, stack_inputs
from agent.devices.simulator.optics import DEFAULT_OPTICS, OpticsParams, Specimen, render_image

__all__ = ["TrainingSpec", "generate_samples"]


@dataclass(frozen=True)
class TrainingSpec:
    """What the training data covers; stored in the weights file so inference can check its inputs."""

    pixel_size_nm: float = 10.0
    patch_px: int = 64
    image_px: int = 256
    perturbation_um: float = 5.0
    wd_range_um: float = 75.0
    near_wd_range_um: float = 8.0
    stig_range: float = 2.5
    near_stig_range: float = 0.4
    near_fraction: float = 0.5
    dwell_us_range: tuple[float, float] = (0.5, 3.0)
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
    """Render ``n_views`` image pairs, 4 samples each: returns ``x (4n, 4, P, P)``, ``y (4n, 3)``.

    Each sample is a fine patch pair and the coarse pair of the whole field (see :func:`stack_inputs`).

    ``y`` columns are the WD correction (µm) and the two stigmator corrections (units).
    """
    if n_views < 1:
        raise ValueError("n_views must be >= 1")
    p = spec.patch_px
    side = spec.image_px
    fov_m = spec.pixel_size_nm * 1e-9 * side
    corners = patch_grid((side, side), p, 4)
    specimens: dict[int, Specimen] = {}
    xs = np.empty((4 * n_views, 4, p, p), dtype=np.float32)
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
        # Random patch positions (not only the corners) so the fine patches see the whole field.
        jitter = [(int(rng.integers(0, side - p + 1)), int(rng.integers(0, side - p + 1))) for _ in corners]
        xs[4 * i : 4 * i + 4] = stack_inputs(pair[0], pair[1], jitter, p)
        ys[4 * i : 4 * i + 4] = (-defocus_um, -stig[0], -stig[1])
    return xs, ys
