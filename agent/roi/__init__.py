"""Saving a region of interest as an image pyramid and relocating it (OpenCV, extra ``roi``).

This package imports without OpenCV; matching loads it on first use and raises :class:`RoiError` naming the
extra if it is missing.
"""

from agent.roi.bench import StageBench
from agent.roi.matching import Match, register
from agent.roi.models import (
    MANIFEST_FORMAT,
    FindRoiIteration,
    FindRoiResult,
    RoiError,
    RoiImaging,
    RoiSpec,
    SavedRoi,
    SavedRoiLevel,
)
from agent.roi.ops import RoiOps, RotatableRoiOps
from agent.roi.relocate import AcquisitionLike, find_roi, save_roi
from agent.roi.storage import load_level_image, load_roi_from_fs

__all__ = [
    "MANIFEST_FORMAT",
    "AcquisitionLike",
    "FindRoiIteration",
    "FindRoiResult",
    "Match",
    "RoiError",
    "RoiImaging",
    "RoiOps",
    "RoiSpec",
    "RotatableRoiOps",
    "SavedRoi",
    "SavedRoiLevel",
    "StageBench",
    "find_roi",
    "load_level_image",
    "load_roi_from_fs",
    "register",
    "save_roi",
]
