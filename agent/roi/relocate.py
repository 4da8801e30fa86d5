"""Save an ROI pyramid and navigate back to it (SerialEM "Realign to Item" pattern, sem-reference §8).

:func:`find_roi` starts at the coarsest saved level (or ``start_level``), registers the live image against the
saved one (:func:`agent.roi.matching.register`), converts the target's offset into a stage move through the
image rotation, corrects rotation by rotating the scan and scale by adjusting the nominal field of view, each
with its gain. After each move it predicts where the target should now be; the next measurement checks the
prediction, and the translation gain is raised towards one by as much as the move proved accurate (see
``_translation_gain``: a fixed gain of 0.8 leaves 20 % of the error per iteration, which costs a fourth image
for a target half a field away). It moves down to the finest level whose field holds the predicted residual
with margin (skipping levels when it can), or one level once within tolerance; it zooms out and retries on a
low-confidence match; it stops when the finest level is within ``px_tol``, ``rot_tol_rad`` and ``scale_tol``
(that last image is the confirmation and makes no move).

``same_session``: the stage coordinates of the saved pose are trusted, so the search starts there with the
saved image rotation. ``cross_session``: the sample has been reloaded (unknown offset and rotation), so the
search starts at ``initial_pose`` (or where the stage is) and rotation is measured, not assumed.

Both are coroutines over :class:`~agent.roi.ops.AsyncRoiOps` (:func:`save_roi_async`, :func:`find_roi_async`):
the daemon awaits them on its own loop, so a time limit or a stop cancels them at the device call they wait on.
Image registration is pure computation and stays synchronous. :func:`save_roi` and :func:`find_roi` run the same
coroutines over synchronous :class:`~agent.roi.ops.RoiOps` (benches, scripts) without an event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from agent.aio import run_unsuspended
from agent.roi.matching import import_cv2, register
from agent.roi.models import (
    FindRoiIteration,
    FindRoiResult,
    RoiError,
    RoiImaging,
    RoiSpec,
    SavedRoi,
    SavedRoiLevel,
)
from agent.roi.ops import AsyncRoiOps, AsyncRotatableRoiOps, RoiOps, as_async_roi_ops
from agent.roi.storage import load_level_image, load_roi_from_fs, write_roi

__all__ = ["AcquisitionLike", "find_roi", "find_roi_async", "save_roi", "save_roi_async"]

Sleep = Callable[[float], Awaitable[None]]


class AcquisitionLike(Protocol):
    """Anything with frame size and dwell: :class:`RoiImaging` or the device's ``AcquisitionConfig``."""

    @property
    def width(self) -> int:
        """Frame width, pixels."""
        ...

    @property
    def height(self) -> int:
        """Frame height, pixels."""
        ...

    @property
    def dwell_us(self) -> float:
        """Pixel dwell, µs."""
        ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def _pose(ops: AsyncRoiOps) -> dict[str, float]:
    raw = await ops.get_pos()
    try:
        return {k: float(raw[k]) for k in raw if k in ("x", "y", "z", "r", "t")} | {
            "x": float(raw["x"]),
            "y": float(raw["y"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise RoiError(f"get_pos returned {raw!r}: need numeric x and y") from exc


async def _image(ops: AsyncRoiOps, fov_um: float, imaging: AcquisitionLike) -> NDArray[np.float32]:
    shape = (int(imaging.height), int(imaging.width))
    image = np.asarray(
        await ops.acquire_image(fov_um=fov_um, shape=shape, dwell_s=float(imaging.dwell_us) * 1e-6),
        dtype=np.float32,
    )
    if image.shape != shape:
        raise RoiError(f"acquire_image returned shape {image.shape}, expected {shape}")
    return image


async def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - only ever run by run_unsuspended, where no event loop runs


def save_roi(
    ops: RoiOps,
    name: str,
    spec: RoiSpec,
    *,
    config: AcquisitionLike | None = None,
    target_dir: str | Path | None = None,
    inter_level_delay_s: float = 1.0,
) -> SavedRoi:
    """:func:`save_roi_async` over synchronous ``ops``, without an event loop (the pause between levels
    blocks, as the operations do)."""
    return run_unsuspended(
        _save(
            as_async_roi_ops(ops),
            name,
            spec,
            config=config,
            target_dir=target_dir,
            inter_level_delay_s=inter_level_delay_s,
            sleep=_blocking_sleep,
        )
    )


async def save_roi_async(
    ops: AsyncRoiOps,
    name: str,
    spec: RoiSpec,
    *,
    config: AcquisitionLike | None = None,
    target_dir: str | Path | None = None,
    inter_level_delay_s: float = 1.0,
) -> SavedRoi:
    """Capture the spec's pyramid at the current stage position (coarsest level first).

    With ``target_dir`` the images (16-bit PNG) and ``manifest.json`` are written there (an existing manifest
    is never overwritten) and the returned ROI points at the files; without it the images stay in memory on
    the returned object, which :func:`find_roi` accepts directly.
    """
    return await _save(
        ops,
        name,
        spec,
        config=config,
        target_dir=target_dir,
        inter_level_delay_s=inter_level_delay_s,
        sleep=asyncio.sleep,
    )


async def _save(
    ops: AsyncRoiOps,
    name: str,
    spec: RoiSpec,
    *,
    config: AcquisitionLike | None,
    target_dir: str | Path | None,
    inter_level_delay_s: float,
    sleep: Sleep,
) -> SavedRoi:
    if not name or not name.strip() or len(name) > 200:
        raise RoiError("ROI name must be 1-200 characters")
    if inter_level_delay_s < 0 or not math.isfinite(inter_level_delay_s):
        raise RoiError(f"inter_level_delay_s must be >= 0, got {inter_level_delay_s}")
    if target_dir is not None:
        import_cv2()  # writing PNGs needs OpenCV: fail before acquiring anything
    if target_dir is not None and (Path(target_dir) / "manifest.json").exists():
        raise RoiError(f"{Path(target_dir) / 'manifest.json'} already exists: choose another target_dir")
    imaging: AcquisitionLike = config if config is not None else RoiImaging()
    pose = await _pose(ops)
    rotation = await _get_rotation(ops)
    levels: list[SavedRoiLevel] = []
    images: dict[str, NDArray[np.float32]] = {}
    for k, (level, fov) in enumerate(spec.levels()):
        if k and inter_level_delay_s > 0:
            await sleep(inter_level_delay_s)  # let the column settle after the magnification change
        await ops.set_view_field(fov)
        images[level] = await _image(ops, fov, imaging)
        levels.append(
            SavedRoiLevel(
                level=level,
                fov_um=fov,
                pixel_size_nm=fov * 1e3 / imaging.width,
                width=int(imaging.width),
                height=int(imaging.height),
                dwell_us=float(imaging.dwell_us),
                image=f"{level}.png",
                stage_pose=await _pose(ops),
                image_rotation_rad=await _get_rotation(ops),
                acquired_at=_now(),
            )
        )
    roi = SavedRoi(
        name=name, created_at=_now(), spec=spec, stage_pose=pose, image_rotation_rad=rotation, levels=levels
    )
    if target_dir is not None:
        return write_roi(roi, images, target_dir)
    roi._images.update(images)
    return roi


async def _get_rotation(ops: AsyncRoiOps) -> float:
    return float(await ops.get_image_rotation_rad()) if isinstance(ops, AsyncRotatableRoiOps) else 0.0


def _level_image(roi: SavedRoi, level: SavedRoiLevel) -> NDArray[np.float32]:
    cached = roi._images.get(level.level)
    if cached is None:
        cached = roi._images[level.level] = load_level_image(level)
    return np.asarray(cached, dtype=np.float32)


def _rotate(angle: float, vec: tuple[float, float]) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return (c * vec[0] - s * vec[1], s * vec[0] + c * vec[1])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def find_roi(ops: RoiOps, roi_path: str | Path | SavedRoi, **options: Any) -> FindRoiResult:
    """:func:`find_roi_async` over synchronous ``ops`` (same keyword arguments), without an event loop."""
    return run_unsuspended(find_roi_async(as_async_roi_ops(ops), roi_path, **options))


async def find_roi_async(
    ops: AsyncRoiOps,
    roi_path: str | Path | SavedRoi,
    *,
    stage_mode: str = "same_session",
    initial_pose: Mapping[str, float] | None = None,
    start_level: str | None = None,
    base_config: AcquisitionLike | None = None,
    max_initial_fov_um: float | None = None,
    max_zoom_out_retries: int = 0,
    max_iters: int = 8,
    max_iters_per_level: int = 4,
    px_tol: float = 15.0,
    rot_tol_rad: float = 0.017,
    scale_tol: float = 0.02,
    gain_xy: float = 0.8,
    gain_rot: float = 0.8,
    gain_fov: float = 0.8,
    min_confidence: float = 0.25,
    descend_fraction: float = 0.4,
    max_move_fov_fraction: float = 0.45,
) -> FindRoiResult:
    """Navigate back to a saved ROI by correlative image matching (see the module docstring).

    Args mirror the Semphony SDK's ``find_roi`` (same names and defaults); two extras:
    ``descend_fraction`` (move down to the finest level whose FOV times this fraction exceeds the error
    predicted after a correction) and ``max_move_fov_fraction`` (cap on one stage move, as a fraction of the
    live FOV; the device's relative-move guardrail is usually 0.5). ``gain_xy`` damps the first move and any
    move after one that missed its prediction; after an accurate move it is raised, never above one.
    ``base_config`` sets frame size and dwell of the live images (default: those of each saved level).
    ``initial_pose`` is a ``{x, y[, z, r]}`` stage position to start from. Raises :class:`RoiError` for bad
    arguments or an unreadable ROI; a search that does not converge
    returns ``success=False`` with the reason.
    """
    import_cv2()  # fail early, before moving anything, if the roi extra is missing
    if stage_mode not in ("same_session", "cross_session"):
        raise RoiError(f"stage_mode must be 'same_session' or 'cross_session', got {stage_mode!r}")
    for label, value in (("max_iters", max_iters), ("max_iters_per_level", max_iters_per_level)):
        if value < 1:
            raise RoiError(f"{label} must be >= 1")
    if max_zoom_out_retries < 0:
        raise RoiError("max_zoom_out_retries must be >= 0")
    for label, gain in (("gain_xy", gain_xy), ("gain_rot", gain_rot), ("gain_fov", gain_fov)):
        if not 0 < gain <= 1.5:
            raise RoiError(f"{label} must be in (0, 1.5], got {gain}")
    if px_tol <= 0 or rot_tol_rad <= 0 or scale_tol <= 0:
        raise RoiError("px_tol, rot_tol_rad and scale_tol must be positive")
    roi = roi_path if isinstance(roi_path, SavedRoi) else load_roi_from_fs(roi_path)
    levels = roi.levels
    index = 0 if start_level is None else levels.index(roi.level(start_level))
    t0 = time.perf_counter()

    if initial_pose is not None:
        await ops.move_to(
            float(initial_pose["x"]), float(initial_pose["y"]), initial_pose.get("z"), initial_pose.get("r")
        )
    elif stage_mode == "same_session":
        saved = levels[index].stage_pose
        await ops.move_to(saved["x"], saved["y"], saved.get("z"), saved.get("r"))
    rotatable = isinstance(ops, AsyncRotatableRoiOps)
    if stage_mode == "same_session" and isinstance(ops, AsyncRotatableRoiOps):
        await ops.set_image_rotation_rad(levels[index].image_rotation_rad)

    fov_factor = 1.0
    zoom = 1.0
    retries = 0
    level_iters = 0
    trace: list[FindRoiIteration] = []
    success = False
    message = f"iteration cap ({max_iters}) reached"
    last: tuple[float, float, float, float] | None = None  # error px, rotation, scale, confidence
    # After a move: where the target should then be (stage frame, mm) if the move did what was asked, and the
    # move itself; the next measurement checks it (see _translation_gain).
    prediction: tuple[tuple[float, float], tuple[float, float]] | None = None

    while len(trace) < max_iters:
        level = levels[index]
        imaging: AcquisitionLike = base_config if base_config is not None else _level_imaging(level)
        fov_live = level.fov_um * fov_factor * zoom
        theta = await _get_rotation(ops)
        await ops.set_view_field(fov_live)
        live = await _image(ops, fov_live, imaging)
        level_iters += 1
        saved_img = _level_image(roi, level)
        # Resample the saved image to the live image's expected pixel size (zoom-out or other frame sizes).
        ratio = imaging.width / (zoom * level.width)
        ref = _resize(saved_img, ratio)
        match = register(ref, live)
        saved_px_mm = level.fov_um * 1e-3 / level.width
        # Offset of the target from the live centre, image frame, mm (see agent.roi.matching for t and scale).
        offset_mm = (
            match.tx * saved_px_mm / (ratio * match.scale),
            match.ty * saved_px_mm / (ratio * match.scale),
        )
        err_px = math.hypot(*offset_mm) / saved_px_mm
        entry = {
            "index": len(trace),
            "level": level.level,
            "fov_um": fov_live,
            "method": match.method,
            "confidence": match.confidence,
            "offset_px": (offset_mm[0] / saved_px_mm, offset_mm[1] / saved_px_mm),
            "error_px": err_px,
            "rotation_rad": match.angle_rad,
            "scale": match.scale,
            "gain_xy": 0.0,  # no move unless the match is trusted (set below)
        }
        if match.confidence < min_confidence:
            if retries < max_zoom_out_retries:
                retries += 1
                new_zoom = zoom * 2.0
                if max_initial_fov_um is not None:
                    new_zoom = min(new_zoom, max_initial_fov_um / (level.fov_um * fov_factor))
                if new_zoom > zoom * 1.01:
                    zoom = new_zoom
                    trace.append(_iteration(entry, (0.0, 0.0), 0.0, fov_factor, "zoom_out"))
                    continue
            trace.append(_iteration(entry, (0.0, 0.0), 0.0, fov_factor, "fail"))
            message = (
                f"low match confidence {match.confidence:.2f} < {min_confidence} at level {level.level}"
                + (f" after {retries} zoom-out retries" if retries else "")
            )
            break
        last = (err_px, match.angle_rad, match.scale, match.confidence)
        zoom = 1.0
        finest = index == len(levels) - 1
        # Without rotation control a residual rotation cannot be corrected, so it cannot block convergence.
        rot_ok = abs(match.angle_rad) <= rot_tol_rad or not rotatable
        within = err_px <= px_tol and rot_ok and abs(match.scale - 1.0) <= scale_tol
        # Corrections: rotation by the scan, scale by the nominal FOV, position by the stage.
        rotate = gain_rot * match.angle_rad if rotatable else 0.0
        fov_factor *= 1.0 + gain_fov * (match.scale - 1.0)
        target = _rotate(theta, offset_mm)  # where the target is now, relative to the beam, stage frame
        gain = _translation_gain(gain_xy, target, prediction)
        entry["gain_xy"] = gain
        move = (0.0, 0.0)
        if not (within and finest):
            # A stage move adds positioning error: once the finest level is within tolerance, do not move.
            step = (gain * target[0], gain * target[1])
            cap = max_move_fov_fraction * fov_live * 1e-3
            norm = math.hypot(*step)
            if norm > cap:
                step = (step[0] * cap / norm, step[1] * cap / norm)
            move = step
            await ops.move_delta(move[0], move[1])
            prediction = ((target[0] - move[0], target[1] - move[1]), move)
        if rotate != 0.0 and isinstance(ops, AsyncRotatableRoiOps):
            await ops.set_image_rotation_rad(_wrap(theta + rotate))
        if within and finest:
            trace.append(_iteration(entry, move, rotate, fov_factor, "converged"))
            success, message = True, f"within tolerance at level {level.level}"
            break
        # Expected distance to the target after this move: what the gain (or the move cap) leaves, plus the
        # matcher's and the stage's imprecision, taken as two pixels of the live image.
        residual_mm = (
            math.hypot(target[0] - move[0], target[1] - move[1]) + 2.0 * fov_live * 1e-3 / imaging.width
        )
        # Descend to the finest level whose field still holds the target with margin (skipping levels);
        # within tolerance, or out of iterations here, descend at least one level.
        deeper = [
            j
            for j in range(index + 1, len(levels))
            if residual_mm <= descend_fraction * levels[j].fov_um * 1e-3
        ]
        if not finest and not deeper and (within or level_iters >= max_iters_per_level):
            deeper = [index + 1]
        if deeper:
            trace.append(_iteration(entry, move, rotate, fov_factor, "descend"))
            index = deeper[-1]
            level_iters = 0
            retries = 0
            continue
        if level_iters >= max_iters_per_level:
            trace.append(_iteration(entry, move, rotate, fov_factor, "fail"))
            message = f"not within tolerance after {level_iters} iterations at level {level.level}"
            break
        trace.append(_iteration(entry, move, rotate, fov_factor, "stay"))

    return FindRoiResult(
        success=success,
        message=message,
        roi_name=roi.name,
        stage_mode="same_session" if stage_mode == "same_session" else "cross_session",
        iterations=len(trace),
        final_level=levels[index].level if trace else None,
        final_error_px=last[0] if last else None,
        final_rotation_rad=last[1] if last else None,
        final_scale=last[2] if last else None,
        final_confidence=last[3] if last else None,
        fov_factor=fov_factor,
        stage_pose=await _pose(ops),
        image_rotation_rad=await _get_rotation(ops),
        trace=trace,
        elapsed_s=time.perf_counter() - t0,
    )


def _translation_gain(
    gain_xy: float,
    target: tuple[float, float],
    prediction: tuple[tuple[float, float], tuple[float, float]] | None,
) -> float:
    """The translation gain for this correction: ``gain_xy``, raised once the last move proved accurate.

    A gain below one damps a correction whose effect is uncertain (stage scale, matcher error, a calibration
    the loop has not checked). The measurement after a move checks it: if the target is found where the move
    should have left it, to within a fraction ``e`` of the move's length, the move did what was asked to
    within ``e``, and damping by more than that fraction only costs iterations. So the gain becomes
    ``max(gain_xy, 1 - e)``: the first move, and any move after a surprising one, keep ``gain_xy``; a move
    after an accurate one is nearly full. Without this, each iteration leaves ``1 - gain_xy`` of the error
    (20 % at the default 0.8), and a target half a field away needs three corrections plus a confirming
    image.
    """
    if prediction is None or gain_xy >= 1.0:
        return gain_xy
    expected, move = prediction
    length = math.hypot(*move)
    if length <= 0.0:
        return gain_xy
    surprise = math.hypot(target[0] - expected[0], target[1] - expected[1]) / length
    return max(gain_xy, 1.0 - surprise)


def _level_imaging(level: SavedRoiLevel) -> RoiImaging:
    return RoiImaging(width=level.width, height=level.height, dwell_us=level.dwell_us)


def _resize(image: NDArray[np.float32], ratio: float) -> NDArray[np.float32]:
    if abs(ratio - 1.0) < 1e-6:
        return image
    cv2 = import_cv2()
    h, w = image.shape
    size = (max(8, round(w * ratio)), max(8, round(h * ratio)))
    interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interp), dtype=np.float32)


def _iteration(
    entry: dict[str, object], move: tuple[float, float], rotate: float, fov_factor: float, action: str
) -> FindRoiIteration:
    return FindRoiIteration.model_validate(
        {**entry, "move_mm": move, "rotate_rad": rotate, "fov_factor": fov_factor, "action": action}
    )
