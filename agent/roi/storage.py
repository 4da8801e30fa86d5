"""ROI persistence: ``manifest.json`` plus one 16-bit PNG per level, written atomically, read back checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from agent.roi.matching import import_cv2
from agent.roi.models import RoiError, SavedRoi, SavedRoiLevel

__all__ = ["load_level_image", "load_roi_from_fs", "write_roi"]

MANIFEST = "manifest.json"


def write_roi(roi: SavedRoi, images: dict[str, NDArray[np.float32]], target_dir: str | Path) -> SavedRoi:
    """Write the level images and the manifest into ``target_dir``; returns the ROI with absolute paths.

    Refuses a folder that already holds a manifest (nothing is overwritten). Images are written first and the
    manifest last, through a temporary file and an atomic rename, so a crash never leaves a manifest that
    points at missing images.
    """
    cv2 = import_cv2()
    folder = Path(target_dir)
    manifest = folder / MANIFEST
    if manifest.exists():
        raise RoiError(f"{manifest} already exists: choose another target_dir")
    folder.mkdir(parents=True, exist_ok=True)
    levels = []
    for level in roi.levels:
        image = images[level.level]
        name = f"{level.level}.png"
        data = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 65535.0), 0, 65535).astype(np.uint16)
        if not cv2.imwrite(str(folder / name), data):
            raise RoiError(f"could not write {folder / name}")
        levels.append(level.model_copy(update={"image": name}))
    on_disk = roi.model_copy(update={"levels": levels, "directory": None})
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(on_disk.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return _absolute(on_disk, folder.resolve())


def _absolute(roi: SavedRoi, folder: Path) -> SavedRoi:
    levels = [lvl.model_copy(update={"image": str((folder / lvl.image).resolve())}) for lvl in roi.levels]
    return roi.model_copy(update={"levels": levels, "directory": str(folder)})


def load_roi_from_fs(path: str | Path) -> SavedRoi:
    """Load a saved ROI from its folder or its ``manifest.json``; level image paths become absolute.

    Raises :class:`RoiError` for a missing or malformed manifest, an unknown format, or missing images.
    """
    p = Path(path)
    manifest = p / MANIFEST if p.is_dir() else p
    if not manifest.is_file():
        raise RoiError(f"no ROI manifest at {manifest}")
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RoiError(f"unreadable ROI manifest {manifest}: {exc}") from exc
    try:
        roi = SavedRoi.model_validate(raw)
    except ValidationError as exc:
        raise RoiError(f"invalid ROI manifest {manifest}: {exc}") from exc
    folder = manifest.parent.resolve()
    out = _absolute(roi, folder)
    for lvl in out.levels:
        if not Path(lvl.image).is_file():
            raise RoiError(f"ROI {roi.name!r} level {lvl.level}: image {lvl.image} is missing")
    return out


def load_level_image(level: SavedRoiLevel) -> NDArray[np.float32]:
    """Read a level's image as float32 in [0, 1]."""
    cv2 = import_cv2()
    data = cv2.imread(level.image, cv2.IMREAD_UNCHANGED)
    if data is None or data.ndim != 2:
        raise RoiError(f"cannot read ROI image {level.image}")
    if (data.shape[0], data.shape[1]) != (level.height, level.width):
        raise RoiError(
            f"ROI image {level.image} is {data.shape}, manifest says {(level.height, level.width)}"
        )
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    out: NDArray[np.float32] = (data.astype(np.float32) / np.float32(scale)).astype(np.float32)
    return out
