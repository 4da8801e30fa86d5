"""Registration of a live image against a saved one: translation, rotation and scale (OpenCV).

Primary estimator: SIFT keypoints (rotation- and scale-invariant, robust to partial overlap), Lowe's ratio
test and a RANSAC similarity fit (``cv2.estimateAffinePartial2D``, sem-reference §8.3). Fallback when too few
features match: phase correlation (``cv2.phaseCorrelate`` with a Hanning window) for a pure translation.
Either way the confidence is the normalised cross-correlation of the overlap after warping the live image onto
the saved one, scaled down when the overlap is small: a wrong match scores near zero whatever the matcher
said.

Transform convention (about the image centres ``c``): ``x_live − c_live = scale · R(angle) · (x_saved −
c_saved) + t``. The saved centre therefore appears at ``c_live + t`` in the live image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.roi.models import RoiError

__all__ = ["Match", "import_cv2", "register", "warp_similarity"]

_MIN_INLIERS = 8
_MIN_OVERLAP = 0.15


def import_cv2() -> ModuleType:
    """Import OpenCV or raise :class:`RoiError` naming the missing extra."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RoiError("ROI matching needs OpenCV: install em-agent[roi]") from exc
    return cv2


@dataclass(frozen=True)
class Match:
    """The similarity between a saved and a live image (see the module docstring) and its quality."""

    tx: float
    ty: float
    angle_rad: float
    scale: float
    confidence: float
    method: str
    inliers: int = 0
    overlap: float = 0.0


def _to_u8(image: NDArray[np.float32]) -> NDArray[np.uint8]:
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = (image - lo) * (255.0 / max(float(hi - lo), 1e-6))
    out: NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def _matrix(m: Match, saved_shape: tuple[int, int], live_shape: tuple[int, int]) -> NDArray[np.float64]:
    """2x3 matrix mapping saved pixel coordinates to live pixel coordinates."""
    cs = np.array([(saved_shape[1] - 1) / 2.0, (saved_shape[0] - 1) / 2.0])
    cl = np.array([(live_shape[1] - 1) / 2.0, (live_shape[0] - 1) / 2.0])
    c, s = math.cos(m.angle_rad) * m.scale, math.sin(m.angle_rad) * m.scale
    a = np.array([[c, -s], [s, c]])
    t = cl + np.array([m.tx, m.ty]) - a @ cs
    return np.hstack([a, t[:, None]])


def _from_matrix(
    mat: NDArray[np.float64], saved_shape: tuple[int, int], live_shape: tuple[int, int]
) -> tuple[float, float, float, float]:
    cs = np.array([(saved_shape[1] - 1) / 2.0, (saved_shape[0] - 1) / 2.0])
    cl = np.array([(live_shape[1] - 1) / 2.0, (live_shape[0] - 1) / 2.0])
    a = mat[:, :2]
    scale = math.hypot(a[0, 0], a[1, 0])
    angle = math.atan2(a[1, 0], a[0, 0])
    t = a @ cs + mat[:, 2] - cl
    return float(t[0]), float(t[1]), angle, scale


def warp_similarity(
    image: NDArray[np.float32], m: Match, saved_shape: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Warp a live image into the saved image's frame; returns the warped image and its validity mask."""
    cv2 = import_cv2()
    mat = _matrix(m, saved_shape, image.shape)
    h, w = saved_shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(image.astype(np.float32), mat, (w, h), flags=flags, borderValue=0.0)
    valid = cv2.warpAffine(np.ones(image.shape, np.float32), mat, (w, h), flags=flags, borderValue=0.0)
    return warped, valid > 0.999


def _confidence(saved: NDArray[np.float32], live: NDArray[np.float32], m: Match) -> tuple[float, float]:
    """Band-passed NCC over the overlap, times a penalty for small overlaps.

    The band pass (light blur against shot noise, minus a wide blur) matters: the specimen's large-scale
    shading makes even unrelated fields correlate at ±0.4, while their texture does not.
    """
    cv2 = import_cv2()
    warped, valid = warp_similarity(live, m, saved.shape)
    overlap = float(valid.mean())
    if overlap < _MIN_OVERLAP:
        return 0.0, overlap
    s32 = saved.astype(np.float32)
    a = (cv2.GaussianBlur(s32, (0, 0), 1.5) - cv2.GaussianBlur(s32, (0, 0), 8.0))[valid]
    b = (cv2.GaussianBlur(warped, (0, 0), 1.5) - cv2.GaussianBlur(warped, (0, 0), 8.0))[valid]
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    ncc = float((a * b).sum()) / denom if denom > 0 else 0.0
    return max(0.0, ncc) * min(1.0, overlap / 0.5), overlap


def _features(cv2: Any, saved: NDArray[np.float32], live: NDArray[np.float32]) -> Match | None:
    sift = cv2.SIFT_create(nfeatures=1500, contrastThreshold=0.02)
    blur_s = cv2.GaussianBlur(_to_u8(saved), (0, 0), 1.0)
    blur_l = cv2.GaussianBlur(_to_u8(live), (0, 0), 1.0)
    kp_s, des_s = sift.detectAndCompute(blur_s, None)
    kp_l, des_l = sift.detectAndCompute(blur_l, None)
    if des_s is None or des_l is None or len(kp_s) < _MIN_INLIERS or len(kp_l) < _MIN_INLIERS:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_s, des_l, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < _MIN_INLIERS:
        return None
    src = np.array([kp_s[g.queryIdx].pt for g in good], dtype=np.float32)
    dst = np.array([kp_l[g.trainIdx].pt for g in good], dtype=np.float32)
    mat, inliers = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=3.0,
        maxIters=4000,
        confidence=0.995,
        refineIters=20,
    )
    if mat is None or inliers is None or int(inliers.sum()) < _MIN_INLIERS:
        return None
    tx, ty, angle, scale = _from_matrix(mat.astype(np.float64), saved.shape, live.shape)
    if not (0.5 < scale < 2.0):
        return None
    return Match(tx, ty, angle, scale, 0.0, "features", inliers=int(inliers.sum()))


def _phase(cv2: Any, saved: NDArray[np.float32], live: NDArray[np.float32]) -> Match | None:
    if saved.shape != live.shape:
        return None
    window = cv2.createHanningWindow((saved.shape[1], saved.shape[0]), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(saved.astype(np.float64), live.astype(np.float64), window)
    return Match(float(dx), float(dy), 0.0, 1.0, 0.0, "phase")


def _with_confidence(saved: NDArray[np.float32], live: NDArray[np.float32], m: Match) -> Match:
    conf, overlap = _confidence(saved, live, m)
    return Match(m.tx, m.ty, m.angle_rad, m.scale, conf, m.method, m.inliers, overlap)


def register(saved: NDArray[np.float32], live: NDArray[np.float32]) -> Match:
    """Estimate the similarity taking ``saved`` to ``live`` (images of any sizes, same nominal pixel size).

    Never raises for poor images: an unmatched pair comes back with ``method="none"`` and confidence 0.
    """
    cv2 = import_cv2()
    saved = np.ascontiguousarray(saved, dtype=np.float32)
    live = np.ascontiguousarray(live, dtype=np.float32)
    if saved.ndim != 2 or live.ndim != 2:
        raise RoiError(f"expected 2-D images, got {saved.shape} and {live.shape}")
    candidates = []
    feat = _features(cv2, saved, live)
    if feat is not None:
        candidates.append(_with_confidence(saved, live, feat))
    if not candidates or candidates[0].confidence < 0.3:
        phase = _phase(cv2, saved, live)
        if phase is not None:
            candidates.append(_with_confidence(saved, live, phase))
    if not candidates:
        return Match(0.0, 0.0, 0.0, 1.0, 0.0, "none")
    return max(candidates, key=lambda m: m.confidence)
