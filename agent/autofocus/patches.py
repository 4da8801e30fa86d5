"""Patch-pair extraction and normalisation shared by training and inference (numpy only)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["coarse_pair", "normalize_pairs", "patch_grid", "stack_inputs", "stack_patch_pairs"]


def patch_grid(shape: tuple[int, int], patch_px: int, n_patches: int) -> list[tuple[int, int]]:
    """Deterministic top-left corners of ``n_patches`` patches spread evenly over an image of ``shape``.

    Patches lie on a near-square grid covering the image (overlapping when the image is small), so the
    consensus sees the whole field rather than one spot that may be featureless.
    """
    h, w = shape
    if h < patch_px or w < patch_px:
        raise ValueError(f"image {shape} smaller than the {patch_px}-pixel patch")
    if n_patches < 1:
        raise ValueError("n_patches must be >= 1")
    cols = math.ceil(math.sqrt(n_patches))
    rows = math.ceil(n_patches / cols)
    ys = np.linspace(0, h - patch_px, rows).round().astype(int) if rows > 1 else [(h - patch_px) // 2]
    xs = np.linspace(0, w - patch_px, cols).round().astype(int) if cols > 1 else [(w - patch_px) // 2]
    corners = [(int(y), int(x)) for y in ys for x in xs]
    return corners[:n_patches]


def stack_patch_pairs(
    minus: NDArray[np.float32], plus: NDArray[np.float32], corners: list[tuple[int, int]], patch_px: int
) -> NDArray[np.float32]:
    """Cut the same patches from both images: ``(N, 2, P, P)``, channel 0 = WD − sigma, 1 = WD + sigma."""
    if minus.shape != plus.shape:
        raise ValueError(f"image pair shapes differ: {minus.shape} vs {plus.shape}")
    out = np.empty((len(corners), 2, patch_px, patch_px), dtype=np.float32)
    for k, (y, x) in enumerate(corners):
        out[k, 0] = minus[y : y + patch_px, x : x + patch_px]
        out[k, 1] = plus[y : y + patch_px, x : x + patch_px]
    return normalize_pairs(out)


def normalize_pairs(pairs: NDArray[np.float32]) -> NDArray[np.float32]:
    """Remove each pair's joint mean and divide by its joint s.d. (keeps the contrast ratio between the two)."""
    mean = pairs.mean(axis=(1, 2, 3), keepdims=True)
    std = pairs.std(axis=(1, 2, 3), keepdims=True)
    out: NDArray[np.float32] = ((pairs - mean) / np.maximum(std, 1e-6)).astype(np.float32, copy=False)
    return out


def coarse_pair(minus: NDArray[np.float32], plus: NDArray[np.float32], patch_px: int) -> NDArray[np.float32]:
    """Both whole images block-averaged down to ``patch_px`` square: ``(2, P, P)``, jointly normalised.

    Far from focus the blur spans many pixels and its signal sits at the lowest spatial frequencies, which a
    small full-resolution patch barely resolves; the whole field at reduced resolution carries it (and
    averages shot noise away).
    """
    h, w = minus.shape
    if minus.shape != plus.shape or h != w or h % patch_px:
        raise ValueError(f"coarse view needs equal square images divisible by {patch_px}, got {minus.shape}")
    f = h // patch_px
    pair = np.stack([minus, plus]).reshape(2, patch_px, f, patch_px, f).mean(axis=(2, 4))
    out: NDArray[np.float32] = normalize_pairs(pair[None].astype(np.float32))[0]
    return out


def stack_inputs(
    minus: NDArray[np.float32], plus: NDArray[np.float32], corners: list[tuple[int, int]], patch_px: int
) -> NDArray[np.float32]:
    """Network inputs ``(N, 4, P, P)``: each fine patch pair plus the shared coarse pair of the whole field."""
    fine = stack_patch_pairs(minus, plus, corners, patch_px)
    coarse = np.broadcast_to(coarse_pair(minus, plus, patch_px), fine.shape)
    return np.concatenate([fine, coarse], axis=1)
