"""The classical baseline: sharpness sweeps with parabola fits (sem-reference §7), numpy only.

One round: a WD sweep (coarse then fine in the first round, fine afterwards), a stig-x sweep, a stig-y sweep
and a final fine WD sweep (astigmatism makes the first WD sweep land near a line focus, so WD is re-fitted once
the stigmators are corrected). The sharpness is the band-pass (difference-of-Gaussians) energy of the image,
whose logarithm is close to a parabola around its peak (Rudnaya et al.); the vertex of a parabola through the
best sample and its neighbours is the estimate. This is what runs when torch is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["parabola_vertex", "sharpness"]


def sharpness(image: NDArray[np.float32]) -> float:
    """Band-pass energy: variance of (Gaussian σ=1 px − Gaussian σ=2.5 px) of the image.

    Shot noise adds a constant to it; blur removes it. Computed with one FFT (no SciPy/OpenCV needed).
    """
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None] ** 2
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :] ** 2
    r2 = fx + fy
    k = np.float32(-2.0 * math.pi**2)
    band = np.exp(k * 1.0 * r2) - np.exp(k * 6.25 * r2)
    spec = np.fft.rfft2(img - img.mean()) * band
    filtered = np.fft.irfft2(spec, s=img.shape)
    return float(np.mean(filtered * filtered))


def parabola_vertex(xs: NDArray[np.float64], scores: NDArray[np.float64]) -> float:
    """Arg-max of a parabola fitted to ``log(scores)`` around the best sample (clipped to the sampled range).

    Falls back to the best sample when the neighbourhood is not concave (noise, or the peak at an edge).
    """
    if len(xs) != len(scores) or len(xs) < 3:
        raise ValueError("need at least three samples")
    order = np.argsort(xs)
    x = np.asarray(xs, dtype=np.float64)[order]
    y = np.log(np.maximum(np.asarray(scores, dtype=np.float64)[order], 1e-300))
    best = int(np.argmax(y))
    lo = min(max(best - 1, 0), len(x) - 3)
    xa, ya = x[lo : lo + 3], y[lo : lo + 3]
    a, b, _ = np.polyfit(xa - xa[1], ya, 2)
    if a >= 0 or not math.isfinite(a):
        return float(x[best])
    vertex = float(-b / (2.0 * a) + xa[1])
    return float(np.clip(vertex, x[0], x[-1]))


def sweep(
    values: NDArray[np.float64], measure: Callable[[float], float]
) -> tuple[float, NDArray[np.float64]]:
    """Measure the sharpness at each value and return the fitted optimum and the scores."""
    scores = np.array([measure(float(v)) for v in values], dtype=np.float64)
    return parabola_vertex(values, scores), scores
