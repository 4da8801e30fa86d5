"""``microscope.control.*`` handlers: SmartEM's instruction names, executed for real.

* ``move_stage`` and ``take_image`` drive the SEM through the Semphony device (device lane).
* ``reorder_gridsquares``, ``skip_gridsquares`` and ``reorder_foilholes`` influence EPU's acquisition queue
the
  only way EPU allows: decision records posted to the Athena decision service, with EPU natural ids as area
  ids. With no decision service configured they are declined, never acknowledged as done.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.devices.athena import DecisionRecord, area_id
from agent.devices.image_store import UnsafePathError, save_image
from agent.devices.models import AcquisitionConfig
from agent.instructions.context import Call, DecisionTarget
from agent.instructions.errors import InstructionDeclined, InstructionFailed
from agent.instructions.handlers.common import on_device, safe_name
from agent.instructions.models import JsonDict, Lane
from agent.instructions.registry import HandlerRegistry

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

#: Metres/millimetres/micrometres -> millimetres (Semphony's stage unit).
_TO_MM = {"m": 1000.0, "mm": 1.0, "um": 0.001}


class StagePosition(BaseModel):
    """A stage position; ``z`` optional (kept when absent)."""

    model_config = _STRICT
    x: float
    y: float
    z: float | None = None


class MoveStagePayload(BaseModel):
    """SmartEM's ``move_stage`` payload. Coordinates are in ``unit``, metres by default: the unit of EPU's
    stage positions, which is what SmartEM stores (``stage_position_x/y/z``) and what its decision rules would
    send.
    """

    model_config = _STRICT
    stage_position: StagePosition
    speed: Literal["slow", "normal", "fast"] = Field(
        "normal", description="Recorded in the result; the Semphony stage API has no speed control."
    )
    unit: Literal["m", "mm", "um"] = "m"


class TakeImagePayload(BaseModel):
    """SmartEM's ``take_image`` payload: ``image_params`` is an AcquisitionConfig (fov_um, width, height,
    ...)."""

    model_config = _STRICT
    image_params: AcquisitionConfig = Field(default_factory=AcquisitionConfig)


def _area_ids(values: Any) -> Any:
    return [area_id(v) for v in values] if isinstance(values, list) else values


def _area_id(value: Any) -> Any:
    return area_id(value) if isinstance(value, int | str) else value


class ReorderGridSquaresPayload(BaseModel):
    """Grid squares (EPU natural ids: ``1234`` or ``"GridSquare_1234"``) to acquire first, in order."""

    model_config = _STRICT
    gridsquare_ids: list[int] = Field(min_length=1, max_length=5000)
    priority: str = "normal"
    reason: str = Field("", max_length=2000)

    _ids = field_validator("gridsquare_ids", mode="before")(_area_ids)


class SkipGridSquaresPayload(BaseModel):
    """Grid squares (EPU natural ids) not to acquire."""

    model_config = _STRICT
    gridsquare_ids: list[int] = Field(min_length=1, max_length=5000)
    reason: str = Field("", max_length=2000)

    _ids = field_validator("gridsquare_ids", mode="before")(_area_ids)


class ReorderFoilHolesPayload(BaseModel):
    """Foil holes (EPU natural ids) of one grid square to acquire, in order."""

    model_config = _STRICT
    gridsquare_id: int
    foilhole_ids: list[int] = Field(min_length=1, max_length=20000)
    priority: str = "normal"
    reason: str = Field("", max_length=2000)

    _sq = field_validator("gridsquare_id", mode="before")(_area_id)
    _ids = field_validator("foilhole_ids", mode="before")(_area_ids)


def _decisions(call: Call) -> DecisionTarget:
    target = call.context.decisions
    if target is None:
        raise InstructionDeclined(
            "no Athena decision service is configured (device.athena_url): EPU's acquisition queue cannot be "
            "changed from this agent"
        )
    return target


def _details(priority: str, reason: str) -> str | None:
    text = "; ".join(
        part for part in (f"priority={priority}" if priority != "normal" else "", reason) if part
    )
    return text or None


def _records(records: list[DecisionRecord]) -> list[JsonDict]:
    return [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in records]


def register(registry: HandlerRegistry) -> None:
    """Add the ``microscope.control.*`` handlers to ``registry``."""

    @registry.add(
        "microscope.control.move_stage",
        MoveStagePayload,
        Lane.DEVICE,
        "Move the stage to stage_position {x, y, z} (metres unless unit says mm/um).",
    )
    async def move_stage(p: MoveStagePayload, call: Call) -> JsonDict:
        k = _TO_MM[p.unit]
        pos = p.stage_position
        x, y, z = pos.x * k, pos.y * k, None if pos.z is None else pos.z * k
        reached = await on_device(call, lambda d: d.stage.move_to(x, y, z))
        return {"target_mm": {"x": x, "y": y, "z": z}, "position_mm": reached, "speed_requested": p.speed}

    @registry.add(
        "microscope.control.take_image",
        TakeImagePayload,
        Lane.DEVICE,
        "Acquire an image with image_params; saved under <state_dir>/images; returns id, path, size, metadata.",
    )
    async def take_image(p: TakeImagePayload, call: Call) -> JsonDict:
        result = await on_device(call, lambda d: d.imaging.acquire(p.image_params, download=True))
        if result.image_bytes is None:
            raise InstructionFailed(
                "the device returned no image for this acquisition", image_id=result.image_id
            )
        image = result.image_bytes
        try:
            saved = await asyncio.to_thread(
                save_image,
                call.context.state_dir,
                result,
                image,
                filename=f"{safe_name(call.instruction_id)}.png",
                overwrite=True,
            )
        except (UnsafePathError, OSError) as exc:
            raise InstructionFailed(f"cannot save the image: {exc}") from exc
        return {
            "image_id": saved.image_id,
            "path": saved.path,
            "size_bytes": saved.size_bytes,
            "metadata_path": saved.metadata_path,
            "metadata": saved.metadata,
        }

    @registry.add(
        "microscope.control.reorder_gridsquares",
        ReorderGridSquaresPayload,
        Lane.DEVICE,
        "Athena acquisitionOrder decisions: the listed grid squares first, in order.",
    )
    async def reorder_gridsquares(p: ReorderGridSquaresPayload, call: Call) -> JsonDict:
        target = _decisions(call)
        posted = await target.client.reorder_gridsquares(
            target.session_id, p.gridsquare_ids, _details(p.priority, p.reason)
        )
        return {"athena_session_id": target.session_id, "decisions": _records(posted)}

    @registry.add(
        "microscope.control.skip_gridsquares",
        SkipGridSquaresPayload,
        Lane.DEVICE,
        "Athena gridSquareSelection decisions with value false: EPU skips these squares.",
    )
    async def skip_gridsquares(p: SkipGridSquaresPayload, call: Call) -> JsonDict:
        target = _decisions(call)
        posted = await target.client.skip_gridsquares(target.session_id, p.gridsquare_ids, p.reason or None)
        return {"athena_session_id": target.session_id, "decisions": _records(posted)}

    @registry.add(
        "microscope.control.reorder_foilholes",
        ReorderFoilHolesPayload,
        Lane.DEVICE,
        "Athena foilHoleSelection (listed holes selected) and acquisitionOrder (their order) decisions.",
    )
    async def reorder_foilholes(p: ReorderFoilHolesPayload, call: Call) -> JsonDict:
        target = _decisions(call)
        details = _details(p.priority, p.reason)
        selected = await target.client.select_foilholes(
            target.session_id, p.gridsquare_id, dict.fromkeys(p.foilhole_ids, True), details
        )
        ordered = await target.client.reorder_foilholes(
            target.session_id, p.gridsquare_id, p.foilhole_ids, details
        )
        return {"athena_session_id": target.session_id, "decisions": _records(selected + ordered)}
