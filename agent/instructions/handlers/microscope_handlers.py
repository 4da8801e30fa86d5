"""``microscope.control.*`` handlers: SmartEM's instruction names, executed for real.

* ``move_stage`` and ``take_image`` drive the SEM through the Semphony device (device lane).
* ``reorder_gridsquares``, ``skip_gridsquares`` and ``reorder_foilholes`` influence EPU's acquisition queue the
  only way EPU allows: decision records posted to the Athena decision service, with EPU natural ids as area ids.
  With no decision service configured they are declined, never acknowledged as done.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.devices.models import AcquisitionConfig
from agent.instructions.context import Call
from agent.instructions.errors import InstructionDeclined
from agent.instructions.handlers.common import confined, on_device, safe_name
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
    """SmartEM's ``move_stage`` payload. Coordinates are in ``unit``, metres by default: the unit of EPU's stage
    positions, which is what SmartEM stores (``stage_position_x/y/z``) and what its decision rules would send.
    """

    model_config = _STRICT
    stage_position: StagePosition
    speed: Literal["slow", "normal", "fast"] = Field(
        "normal", description="Recorded in the result; the Semphony stage API has no speed control."
    )
    unit: Literal["m", "mm", "um"] = "m"


class TakeImagePayload(BaseModel):
    """SmartEM's ``take_image`` payload: ``image_params`` is an AcquisitionConfig (fov_um, width, height, ...)."""

    model_config = _STRICT
    image_params: AcquisitionConfig = Field(default_factory=AcquisitionConfig)


def _area_id(value: str | int) -> int:
    """EPU natural ids are integers; Athena area ids are too."""
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"EPU natural id must be a non-negative integer, got {value!r}")
    return int(text)


class ReorderGridSquaresPayload(BaseModel):
    """Grid squares (EPU natural ids) to acquire first, in order."""

    model_config = _STRICT
    gridsquare_ids: list[int] = Field(min_length=1, max_length=5000)
    priority: str = "normal"
    reason: str = Field("", max_length=2000)

    _ids = field_validator("gridsquare_ids", mode="before")(lambda v: [_area_id(i) for i in v])


class SkipGridSquaresPayload(BaseModel):
    """Grid squares (EPU natural ids) not to acquire."""

    model_config = _STRICT
    gridsquare_ids: list[int] = Field(min_length=1, max_length=5000)
    reason: str = Field("", max_length=2000)

    _ids = field_validator("gridsquare_ids", mode="before")(lambda v: [_area_id(i) for i in v])


class ReorderFoilHolesPayload(BaseModel):
    """Foil holes (EPU natural ids) of one grid square to acquire, in order."""

    model_config = _STRICT
    gridsquare_id: int
    foilhole_ids: list[int] = Field(min_length=1, max_length=20000)
    priority: str = "normal"
    reason: str = Field("", max_length=2000)

    _sq = field_validator("gridsquare_id", mode="before")(_area_id)
    _ids = field_validator("foilhole_ids", mode="before")(lambda v: [_area_id(i) for i in v])


def _decisions(call: Call) -> Any:
    service = call.context.decisions
    if service is None:
        raise InstructionDeclined(
            "no Athena decision service is configured (device.athena_url): EPU's acquisition queue cannot be "
            "changed from this agent"
        )
    return service


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
        target = confined(call.context.images_dir, f"{safe_name(call.instruction_id)}.png")
        result = await on_device(call, lambda d: d.imaging.acquire(p.image_params, target_path=str(target)))
        if result.image_path is None:
            raise InstructionDeclined("the device kept no image for this acquisition", image_id=result.image_id)
        return {
            "image_id": result.image_id,
            "path": str(target),
            "size_bytes": target.stat().st_size,
            "metadata": result.metadata(),
        }

    @registry.add(
        "microscope.control.reorder_gridsquares",
        ReorderGridSquaresPayload,
        Lane.DEVICE,
        "Athena acquisitionOrder decisions: the listed grid squares first, in order.",
    )
    async def reorder_gridsquares(p: ReorderGridSquaresPayload, call: Call) -> JsonDict:
        service = _decisions(call)
        details = f"priority={p.priority}; {p.reason}".strip("; ")
        records = [
            {"areaId": sq, "decisionType": "acquisitionOrder", "decisionValue": str(rank), "details": details}
            for rank, sq in enumerate(p.gridsquare_ids)
        ]
        posted = await service.post_decisions(records)
        return {"decision_type": "acquisitionOrder", "decisions": posted}

    @registry.add(
        "microscope.control.skip_gridsquares",
        SkipGridSquaresPayload,
        Lane.DEVICE,
        "Athena gridSquareSelection decisions with value false: EPU skips these squares.",
    )
    async def skip_gridsquares(p: SkipGridSquaresPayload, call: Call) -> JsonDict:
        service = _decisions(call)
        records = [
            {"areaId": sq, "decisionType": "gridSquareSelection", "decisionValue": "false", "details": p.reason}
            for sq in p.gridsquare_ids
        ]
        posted = await service.post_decisions(records)
        return {"decision_type": "gridSquareSelection", "decisions": posted}

    @registry.add(
        "microscope.control.reorder_foilholes",
        ReorderFoilHolesPayload,
        Lane.DEVICE,
        "Athena foilHoleSelection decision for the square: the listed holes, in order.",
    )
    async def reorder_foilholes(p: ReorderFoilHolesPayload, call: Call) -> JsonDict:
        service = _decisions(call)
        value = json.dumps([{"areaId": hole, "result": "true"} for hole in p.foilhole_ids])
        details = f"priority={p.priority}; {p.reason}".strip("; ")
        records = [
            {
                "areaId": p.gridsquare_id,
                "decisionType": "foilHoleSelection",
                "decisionValue": value,
                "details": details,
            }
        ]
        posted = await service.post_decisions(records)
        return {"decision_type": "foilHoleSelection", "decisions": posted}
