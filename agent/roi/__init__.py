"""Saving a region of interest as an image pyramid and relocating it (OpenCV, extra ``roi``).

This package imports without OpenCV; matching loads it on first use and raises :class:`RoiError` naming the
extra if it is missing. Capture and relocation are coroutines over :class:`AsyncRoiOps` (what the daemon
awaits), with synchronous entry points over :class:`RoiOps`. The test bench (:class:`agent.roi.bench.StageBench`,
built on the simulator's optics) is imported from its module, so that importing this package never loads the
simulator.
"""

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
from agent.roi.ops import AsyncRoiOps, AsyncRotatableRoiOps, RoiOps, RotatableRoiOps, as_async_roi_ops
from agent.roi.relocate import AcquisitionLike, find_roi, find_roi_async, save_roi, save_roi_async
from agent.roi.storage import load_level_image, load_roi_from_fs

__all__ = [
    "MANIFEST_FORMAT",
    "AcquisitionLike",
    "AsyncRoiOps",
    "AsyncRotatableRoiOps",
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
    "as_async_roi_ops",
    "find_roi",
    "find_roi_async",
    "load_level_image",
    "load_roi_from_fs",
    "register",
    "save_roi",
    "save_roi_async",
]
