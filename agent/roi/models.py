"""ROI models: what to capture, what was saved, what relocation found."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

__all__ = [
    "MANIFEST_FORMAT",
    "FindRoiIteration",
    "FindRoiResult",
    "RoiError",
    "RoiImaging",
    "RoiSpec",
    "SavedRoi",
    "SavedRoiLevel",
]

#: ``format`` value of the manifests this package writes and reads.
MANIFEST_FORMAT: Final = "em-agent-roi/1"
_LEVELS = ("l0", "l1", "l2", "l3")


class RoiError(RuntimeError):
    """An ROI could not be saved, loaded or relocated (the message says why)."""


class RoiImaging(BaseModel):
    """Acquisition settings for ROI images (the device's ``AcquisitionConfig`` has the same three fields)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    width: int = Field(512, ge=32, le=8192, description="Image width, pixels.")
    height: int = Field(512, ge=32, le=8192, description="Image height, pixels.")
    dwell_us: float = Field(1.0, gt=0, le=1000, description="Pixel dwell time, µs.")


class RoiSpec(BaseModel):
    """The pyramid to capture: one field of view per level, coarsest first; a level with FOV 0 is skipped.

    ``l0`` is the overview that relocation starts from; each further level zooms in on the same centre.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    l0_fov_um: float = Field(gt=0, description="Coarsest level (overview) field of view, µm.")
    l1_fov_um: float = Field(0.0, ge=0, description="Second level FOV, µm (0: none).")
    l2_fov_um: float = Field(0.0, ge=0, description="Third level FOV, µm (0: none).")
    l3_fov_um: float = Field(0.0, ge=0, description="Finest level FOV, µm (0: none).")
    description: str = Field("", max_length=2000, description="Free text stored in the manifest.")

    @model_validator(mode="after")
    def _coarse_to_fine(self) -> RoiSpec:
        fovs = [f for _, f in self.levels()]
        if any(b >= a for a, b in pairwise(fovs)):
            raise ValueError(f"level FOVs must shrink from l0 to l3, got {fovs}")
        return self

    def levels(self) -> list[tuple[str, float]]:
        """``[(name, fov_um)]`` of the levels to capture, coarsest first."""
        fovs = (self.l0_fov_um, self.l1_fov_um, self.l2_fov_um, self.l3_fov_um)
        return [(name, fov) for name, fov in zip(_LEVELS, fovs, strict=True) if fov > 0]


class SavedRoiLevel(BaseModel):
    """One saved level: image file, geometry and the stage pose it was taken at."""

    model_config = ConfigDict(extra="forbid")

    level: str
    fov_um: float = Field(gt=0)
    pixel_size_nm: float = Field(gt=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    dwell_us: float = Field(gt=0)
    image: str = Field(description="Image path: relative to the manifest on disk, absolute once loaded.")
    stage_pose: dict[str, float] = Field(description="{x, y, z mm; r, t deg} at acquisition.")
    image_rotation_rad: float = Field(
        description="Angle of the image axes in the stage frame at acquisition."
    )
    acquired_at: str = Field(description="ISO 8601 UTC timestamp.")


class SavedRoi(BaseModel):
    """A saved ROI pyramid (the content of ``manifest.json``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["em-agent-roi/1"] = MANIFEST_FORMAT
    name: str = Field(min_length=1, max_length=200)
    created_at: str
    spec: RoiSpec
    stage_pose: dict[str, float] = Field(description="Stage position when the ROI was saved.")
    image_rotation_rad: float
    levels: list[SavedRoiLevel] = Field(min_length=1)
    directory: str | None = Field(None, description="Folder holding manifest.json (None: not on disk).")
    # Level images kept in memory when the ROI was saved without a target_dir (numpy arrays by level name).
    _images: dict[str, Any] = PrivateAttr(default_factory=dict)

    def level(self, name: str) -> SavedRoiLevel:
        """The level called ``name`` (e.g. ``"l0"``); :class:`RoiError` if absent."""
        for lvl in self.levels:
            if lvl.level == name:
                return lvl
        raise RoiError(f"ROI {self.name!r} has no level {name!r} (has {[lv.level for lv in self.levels]})")

    @property
    def manifest_path(self) -> Path | None:
        """Path of ``manifest.json`` when the ROI is on disk."""
        return Path(self.directory) / "manifest.json" if self.directory else None


class FindRoiIteration(BaseModel):
    """One relocation iteration: the live image's match against a saved level and the correction applied."""

    model_config = ConfigDict(extra="forbid")

    index: int
    level: str
    fov_um: float = Field(description="Nominal FOV of the live image.")
    method: str = Field(description="Matcher that produced the estimate (features, phase, none).")
    confidence: float
    offset_px: tuple[float, float] = Field(
        description="Target offset from the live centre, saved-level pixels."
    )
    error_px: float
    rotation_rad: float
    scale: float
    gain_xy: float = Field(
        description="Translation gain applied: gain_xy, raised once the previous move proved accurate."
    )
    move_mm: tuple[float, float] = Field(description="Stage move applied, stage frame, mm.")
    rotate_rad: float
    fov_factor: float = Field(description="Correction factor on the nominal FOV after this iteration.")
    action: str = Field(description="stay, descend, converged, zoom_out or fail.")


class FindRoiResult(BaseModel):
    """Outcome of :func:`agent.roi.find_roi`."""

    model_config = ConfigDict(extra="forbid")

    success: bool
    message: str
    roi_name: str
    stage_mode: Literal["same_session", "cross_session"]
    iterations: int
    final_level: str | None
    final_error_px: float | None = Field(description="Last measured target offset, finest-level pixels.")
    final_rotation_rad: float | None
    final_scale: float | None
    final_confidence: float | None
    fov_factor: float = Field(description="Learned FOV correction (live nominal FOV / saved FOV).")
    stage_pose: dict[str, float] = Field(description="Stage position at the end.")
    image_rotation_rad: float
    trace: list[FindRoiIteration]
    elapsed_s: float
