"""The learned corrector at inference time: weights loading, patch consensus, one prediction per image pair.

torch is imported only when a corrector is created, so this module imports without the ``autofocus`` extra.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agent.autofocus.models import AutofocusConfig, AutofocusError
from agent.autofocus.patches import patch_grid, stack_inputs

if TYPE_CHECKING:
    from agent.autofocus.network import FocusNet

__all__ = ["SHIPPED_WEIGHTS", "Correction", "LearnedCorrector", "combine_predictions", "torch_available"]

#: The weights file shipped in the package (written by ``python -m agent.autofocus.train``).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "deepfocus_v1.pt"

_MODELS: dict[Path, tuple[FocusNet, dict[str, Any]]] = {}
_MODELS_LOCK = threading.Lock()


def torch_available() -> bool:
    """True when torch can be imported (the ``autofocus`` extra is installed)."""
    return importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class Correction:
    """A predicted focus correction: WD in µm, stigmators in units, with the spread over patches."""

    dwd_um: float
    dstig_x: float
    dstig_y: float
    spread_wd_um: float = 0.0
    spread_stig: float = 0.0


def combine_predictions(
    values: NDArray[np.float64], scales: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Combine per-patch predictions ``(N, 3)`` with their Laplace scales into one estimate per column.

    Patches further than 3 robust s.d. from the median are dropped (a featureless or damaged patch must not
    drag the estimate), then the rest are averaged with inverse-variance weights. Returns the estimate and the
    robust spread, each of shape ``(3,)``.
    """
    if values.ndim != 2 or values.shape != scales.shape or len(values) == 0:
        raise ValueError(f"bad prediction shapes {values.shape} / {scales.shape}")
    median = np.median(values, axis=0)
    mad = 1.4826 * np.median(np.abs(values - median), axis=0)
    spread = np.maximum(mad, 1e-9)
    keep = np.abs(values - median) <= 3.0 * spread + 1e-12
    weights = np.where(keep, 1.0 / np.maximum(scales, 1e-6) ** 2, 0.0)
    estimate = (weights * values).sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-300)
    return estimate, mad


class LearnedCorrector:
    """Wraps the trained :class:`~agent.autofocus.network.FocusNet` and its training metadata."""

    def __init__(self, weights_path: str | Path | None = None) -> None:
        """Load (once per process, then cached) the weights; raises :class:`AutofocusError` if unusable."""
        if not torch_available():
            raise AutofocusError("the learned corrector needs torch: install em-agent[autofocus]")
        path = Path(weights_path) if weights_path is not None else SHIPPED_WEIGHTS
        path = path.resolve()
        with _MODELS_LOCK:
            cached = _MODELS.get(path)
            if cached is None:
                if not path.is_file():
                    raise AutofocusError(
                        f"weights file not found: {path} (train with python -m agent.autofocus.train)"
                    )
                from agent.autofocus.network import load_weights

                try:
                    cached = load_weights(path)
                except (ValueError, RuntimeError, KeyError, OSError) as exc:
                    raise AutofocusError(f"cannot load weights {path}: {exc}") from exc
                _MODELS[path] = cached
        self.model, self.meta = cached
        spec = self.meta["spec"]
        self.pixel_size_nm = float(spec["pixel_size_nm"])
        self.patch_px = int(spec["patch_px"])
        self.image_px = int(spec["image_px"])
        self.perturbation_um = float(spec["perturbation_um"])
        self.target_scale = np.asarray(self.meta["target_scale"], dtype=np.float64)
        self._lock = threading.Lock()

    def check_config(self, config: AutofocusConfig) -> None:
        """Refuse settings the network was not trained for (its outputs would be silently wrong)."""
        problems = []
        if abs(config.pixel_size_nm / self.pixel_size_nm - 1.0) > 0.01:
            problems.append(f"pixel_size_nm={config.pixel_size_nm} (trained: {self.pixel_size_nm})")
        if abs(config.perturbation_um / self.perturbation_um - 1.0) > 0.01:
            problems.append(f"perturbation_um={config.perturbation_um} (trained: {self.perturbation_um})")
        if config.image_size_px != self.image_px:
            problems.append(f"image_size_px={config.image_size_px} (trained: {self.image_px})")
        if problems:
            raise AutofocusError("learned corrector cannot use " + ", ".join(problems))

    def predict(self, minus: NDArray[np.float32], plus: NDArray[np.float32], n_patches: int) -> Correction:
        """Predict the correction from images at ``WD − sigma`` and ``WD + sigma``."""
        import torch

        corners = patch_grid(minus.shape, self.patch_px, n_patches)
        pairs = stack_inputs(minus, plus, corners, self.patch_px)
        if not np.isfinite(pairs).all():
            raise AutofocusError("focus images contain non-finite values")
        with self._lock, torch.no_grad():
            out = self.model(torch.from_numpy(pairs)).double().numpy()
        values = out[:, :3] * self.target_scale
        scales = np.exp(np.clip(out[:, 3:], -6.0, 4.0)) * self.target_scale
        estimate, spread = combine_predictions(values, scales)
        return Correction(
            dwd_um=float(estimate[0]),
            dstig_x=float(estimate[1]),
            dstig_y=float(estimate[2]),
            spread_wd_um=float(spread[0]),
            spread_stig=float(max(spread[1], spread[2])),
        )
