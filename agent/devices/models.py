"""Semphony config/result models and the capability payload models both ends validate.

Units are in the field names: mm for stage and working distance, µm for field of view, µs for dwell,
degrees for rotations. Payload models forbid unknown fields and non-finite numbers so a typo
is a clear 400, not a no-op.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.devices.imageio import decode_png, to_float

__all__ = [
    "AcquisitionConfig",
    "AcquisitionResult",
    "AwaitHumanPayload",
    "BeamPayload",
    "DeformationMovePayload",
    "EntryRefPayload",
    "EntrySetPayload",
    "FocusParamsPayload",
    "MoveDeltaPayload",
    "MoveToPayload",
    "ViewFieldPayload",
]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class AcquisitionConfig(BaseModel):
    """How to acquire one frame."""

    model_config = _STRICT

    fov_um: float | None = Field(None, gt=0, description="Field of view in µm; None keeps the current one.")
    width: int = Field(1024, ge=8, le=8192, description="Frame width, pixels.")
    height: int = Field(768, ge=8, le=8192, description="Frame height, pixels.")
    dwell_us: float = Field(1.0, gt=0, le=1000.0, description="Pixel dwell time, µs.")
    scan_rotation_deg: float | None = Field(
        None, description="Scan rotation, degrees; None keeps the current one."
    )
    detector: str = Field(
        "SE", min_length=1, description="Detector name (the simulator has one SE detector)."
    )
    bit_depth: Literal[8, 16] = Field(16, description="Stored image depth.")
    name: str | None = Field(None, max_length=200, description="Optional label stored with the image.")


class AcquisitionResult(BaseModel):
    """The outcome of an acquisition: the artifact id and the conditions it was taken under."""

    model_config = ConfigDict(extra="allow")

    image_id: str | None = Field(
        description="Artifact id for download_image; None if the server kept no image."
    )
    width: int
    height: int
    fov_um: float
    pixel_size_nm: float
    dwell_us: float
    wd_mm: float
    stigm_x: float
    stigm_y: float
    scan_rotation_deg: float
    stage: dict[str, float] = Field(description="Stage position at acquisition {x, y, z mm; r, t degrees}.")
    frame_time_s: float
    acquired_at: str = Field(description="ISO 8601 UTC timestamp.")
    detector: str = "SE"
    bit_depth: int = 16
    name: str | None = None
    image_bytes: bytes | None = Field(None, exclude=True, description="The artifact, when downloaded.")
    image_path: str | None = Field(
        None, description="Where the artifact was saved, when target_path was given."
    )

    def to_array(self) -> npt.NDArray[np.float32]:
        """The downloaded image as float32 in [0, 1] (requires ``download=True``)."""
        if self.image_bytes is None:
            raise ValueError("image not downloaded: acquire with download=True")
        return to_float(decode_png(self.image_bytes))

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable acquisition metadata (everything but the pixels)."""
        return self.model_dump(mode="json", exclude={"image_bytes"})


class ViewFieldPayload(BaseModel):
    """``SetViewField``."""

    model_config = _STRICT
    fov_um: float = Field(gt=0)


class FocusParamsPayload(BaseModel):
    """``SetFocusParams``: only given values change."""

    model_config = _STRICT
    wd_mm: float | None = Field(None, gt=0)
    stigm_x: float | None = None
    stigm_y: float | None = None


class BeamPayload(BaseModel):
    """``SetBeam``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool


class MoveToPayload(BaseModel):
    """``StageMoveTo``: mm and degrees; unspecified axes keep their value."""

    model_config = _STRICT
    x: float
    y: float
    z: float | None = None
    r: float | None = None
    t: float | None = None


class MoveDeltaPayload(BaseModel):
    """``StageMoveDelta``: mm and degrees."""

    model_config = _STRICT
    dx: float = 0.0
    dy: float = 0.0
    dz: float | None = None
    dr: float | None = None
    dt: float | None = None


class EntryRefPayload(BaseModel):
    """Designates a geometry/centering by fuzzy name or index (exactly one)."""

    model_config = _STRICT
    name: str | None = None
    index: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> EntryRefPayload:
        if (self.name is None) == (self.index is None):
            raise ValueError("give exactly one of name and index")
        return self

    @property
    def key(self) -> str | int:
        """The name or the index."""
        return self.index if self.index is not None else str(self.name)


class EntrySetPayload(EntryRefPayload):
    """Sets a geometry/centering: ``x`` and, for two-valued entries, ``y``."""

    x: float = 0.0
    y: float | None = None


class AwaitHumanPayload(BaseModel):
    """``AwaitHuman``."""

    model_config = _STRICT
    message: str = Field(min_length=1, max_length=2000)


class DeformationMovePayload(BaseModel):
    """``DeformationMove``: an absolute displacement or a delta, µm."""

    model_config = _STRICT
    displacement_um: float | None = None
    delta_um: float | None = None
