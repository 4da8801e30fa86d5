"""``sem.*`` handlers: the whole Semphony surface, one instruction type per SDK call (device lane).

Units are the Semphony SDK's: stage x, y, z and working distance in mm; rotation r and tilt t in degrees;
field of view in µm; dwell in µs. Guardrails run in the device layer before anything moves; a violation is
declined by the executor with the guardrail type and details.

``sem.autofocus`` and ``sem.find_roi`` return a result even when they did not reach their goal; such a run is
acknowledged ``failed`` with that result, because ``processed`` must mean the microscope is where it was asked
to be (in focus, on the ROI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.autofocus.loop import run_autofocus_async
from agent.autofocus.models import AutofocusConfig, AutofocusResult
from agent.devices.microscope import AsyncCenterings, AsyncGeometricTransformations, Microscope
from agent.devices.models import (
    AcquisitionConfig,
    AwaitHumanPayload,
    BeamPayload,
    EntryRefPayload,
    EntrySetPayload,
    FocusParamsPayload,
    MoveDeltaPayload,
    MoveToPayload,
    ViewFieldPayload,
)
from agent.instructions.context import Call
from agent.instructions.errors import InstructionDeclined, InstructionFailed
from agent.instructions.handlers.common import confined, on_device, safe_name
from agent.instructions.models import JsonDict, Lane
from agent.instructions.registry import HandlerRegistry
from agent.roi.models import FindRoiResult, RoiSpec, SavedRoi
from agent.roi.relocate import find_roi_async, save_roi_async

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoPayload(BaseModel):
    """No fields."""

    model_config = _STRICT


class SemAcquirePayload(AcquisitionConfig):
    """:class:`~agent.devices.models.AcquisitionConfig` plus ``save``: keep the image under the state
    directory."""

    save: bool = Field(True, description="Download the image and save it under <state_dir>/images.")


class SetFocusPayload(FocusParamsPayload):
    """``wd_mm`` (mm), ``stigm_x``, ``stigm_y``: at least one."""

    @model_validator(mode="after")
    def _at_least_one(self) -> SetFocusPayload:
        if self.wd_mm is None and self.stigm_x is None and self.stigm_y is None:
            raise ValueError("give at least one of wd_mm, stigm_x, stigm_y")
        return self


class StagePositionPayload(BaseModel):
    """``latest``: return the server's last stored position (fast, may be refused as stale) instead of a live
    read."""

    model_config = _STRICT
    latest: bool = False


class StageMoveToPayload(MoveToPayload):
    """Absolute move: x, y (required), z in mm, r in degrees (the SDK's ``move_to`` takes no tilt)."""

    @model_validator(mode="after")
    def _no_tilt(self) -> StageMoveToPayload:
        if self.t is not None:
            raise ValueError("t (tilt) cannot be set by an absolute move; use sem.stage.move_by with dt")
        return self


class SaveRoiPayload(BaseModel):
    """Capture a pyramidal ROI at the current stage position into ``<state_dir>/rois/<name>``."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._-]+$")
    spec: RoiSpec = Field(description="Levels l0..l3 and their fields of view, µm (coarsest first).")
    config: AcquisitionConfig | None = None
    inter_level_delay_s: float = Field(1.0, ge=0, le=60)


class FindRoiPayload(BaseModel):
    """Navigate back to the ROI saved as ``name`` (under ``<state_dir>/rois``) by image matching."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._-]+$")
    stage_mode: str = Field("same_session", pattern=r"^(same_session|cross_session)$")
    max_iters: int = Field(8, ge=1, le=64)
    px_tol: float = Field(15.0, gt=0)
    max_iters_per_level: int = Field(4, ge=1, le=64)
    min_confidence: float = Field(0.25, ge=0, le=1)


def _dump(value: Any) -> JsonDict:
    if isinstance(value, BaseModel):
        dumped: JsonDict = value.model_dump(mode="json")
        return dumped
    if isinstance(value, dict):
        return value
    return {"value": value}


async def _autofocus(d: Microscope, config: AutofocusConfig, state_dir: Path) -> AutofocusResult:
    d.decline_if_unsupported("autofocus")
    # Reading the identity costs a metrics call, so only when the policy needs it.
    instrument = await d.instrument_key() if config.method == "auto" else None
    return await run_autofocus_async(d.focus_ops(), config, instrument=instrument, state_dir=state_dir)


async def _save_roi(d: Microscope, p: SaveRoiPayload, target: Path) -> SavedRoi:
    return await save_roi_async(
        d.roi_ops(),
        p.name,
        p.spec,
        config=p.config,
        target_dir=str(target),
        inter_level_delay_s=p.inter_level_delay_s,
    )


async def _find_roi(d: Microscope, p: FindRoiPayload, path: Path) -> FindRoiResult:
    d.decline_if_unsupported("find_roi")
    return await find_roi_async(
        d.roi_ops(),
        str(path),
        stage_mode=p.stage_mode,
        max_iters=p.max_iters,
        px_tol=p.px_tol,
        max_iters_per_level=p.max_iters_per_level,
        min_confidence=p.min_confidence,
    )


def register(registry: HandlerRegistry) -> None:
    """Add the ``sem.*`` handlers to ``registry``."""
    dev_lane = Lane.DEVICE

    @registry.add("sem.acquire", SemAcquirePayload, dev_lane, "Acquire one image; saved under the state dir.")
    async def acquire(p: SemAcquirePayload, call: Call) -> JsonDict:
        config = AcquisitionConfig.model_validate(p.model_dump(exclude={"save"}))
        if not p.save:
            result = await on_device(call, lambda d: d.imaging.acquire(config))
            return result.metadata()
        target = confined(call.context.images_dir, f"{safe_name(call.instruction_id)}.png")
        result = await on_device(call, lambda d: d.imaging.acquire(config, target_path=str(target)))
        meta = result.metadata()
        if result.image_path is not None:
            meta["size_bytes"] = target.stat().st_size
        return meta

    @registry.add("sem.set_view_field", ViewFieldPayload, dev_lane, "Set the field of view (fov_um, µm).")
    async def set_view_field(p: ViewFieldPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.set_view_field(p.fov_um))

    @registry.add("sem.get_focus_params", NoPayload, dev_lane, "Read wd_mm, stigm_x, stigm_y.")
    async def get_focus(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.get_focus_params())

    @registry.add(
        "sem.set_focus_params", SetFocusPayload, dev_lane, "Set wd_mm (mm) and/or stigm_x, stigm_y."
    )
    async def set_focus(p: SetFocusPayload, call: Call) -> JsonDict:
        return await on_device(
            call, lambda d: d.imaging.set_focus_params(wd_mm=p.wd_mm, stigm_x=p.stigm_x, stigm_y=p.stigm_y)
        )

    @registry.add("sem.set_beam", BeamPayload, dev_lane, "Beam on/off ({enabled}); vacuum required for on.")
    async def set_beam(p: BeamPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.set_beam(p.enabled))

    @registry.add("sem.beam_on", NoPayload, dev_lane, "Beam on (guardrail: chamber pumped).")
    async def beam_on(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.set_beam(True))

    @registry.add("sem.beam_off", NoPayload, dev_lane, "Beam off.")
    async def beam_off(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.set_beam(False))

    @registry.add("sem.get_metrics", NoPayload, dev_lane, "Device metrics snapshot.")
    async def get_metrics(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.get_metrics())

    @registry.add("sem.vent", NoPayload, dev_lane, "Vent the chamber (guardrail: beam off).")
    async def vent(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.chamber.vent())

    @registry.add("sem.pump", NoPayload, dev_lane, "Pump the chamber; returns when pumped.")
    async def pump(_: NoPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.chamber.pump())

    @registry.add(
        "sem.stage.get_position", StagePositionPayload, dev_lane, "Stage position {x,y,z mm; r,t deg}."
    )
    async def get_position(p: StagePositionPayload, call: Call) -> JsonDict:
        if p.latest:
            return await on_device(call, lambda d: d.stage.get_latest_pos())
        return await on_device(call, lambda d: d.stage.get_pos())

    @registry.add("sem.stage.move_to", StageMoveToPayload, dev_lane, "Absolute move: x, y, z mm; r degrees.")
    async def move_to(p: StageMoveToPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.stage.move_to(p.x, p.y, p.z, p.r))

    @registry.add(
        "sem.stage.move_by", MoveDeltaPayload, dev_lane, "Relative move: dx, dy, dz mm; dr, dt degrees."
    )
    async def move_by(p: MoveDeltaPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.stage.move_delta(p.dx, p.dy, p.dz, p.dr, p.dt))

    for family, label in (("geometry", "geometric transformations"), ("centering", "centerings")):
        _register_table(registry, family, label)

    @registry.add("sem.autofocus", AutofocusConfig, dev_lane, "Iterative autofocus + auto-stigmation.")
    async def autofocus(p: AutofocusConfig, call: Call) -> JsonDict:
        # The state folder holds the validation verdicts that decide what method 'auto' runs.
        result = await on_device(call, lambda d: _autofocus(d, p, call.context.state_dir))
        if not result.converged:
            # The column is not in focus: acting on it as if it were would waste the next acquisitions.
            raise InstructionFailed(f"autofocus did not converge: {result.message}", **_dump(result))
        return _dump(result)

    @registry.add(
        "sem.save_roi", SaveRoiPayload, dev_lane, "Save a pyramidal ROI under <state_dir>/rois/<name>."
    )
    async def save_roi(p: SaveRoiPayload, call: Call) -> JsonDict:
        target = confined(call.context.rois_dir, p.name)
        saved = await on_device(call, lambda d: _save_roi(d, p, target))
        return {"path": str(target), **_dump(saved)}

    @registry.add("sem.find_roi", FindRoiPayload, dev_lane, "Navigate back to a saved ROI (by name).")
    async def find_roi(p: FindRoiPayload, call: Call) -> JsonDict:
        path = confined(call.context.rois_dir, p.name)
        if not path.exists():
            raise InstructionDeclined(f"no saved ROI named {p.name!r}", rois_dir=str(call.context.rois_dir))
        found = await on_device(call, lambda d: _find_roi(d, p, path))
        if not found.success:
            # The stage is somewhere near the ROI at best: whatever runs next must not assume it is on it.
            raise InstructionFailed(f"ROI {p.name!r} was not relocated: {found.message}", **_dump(found))
        return _dump(found)

    @registry.add("sem.await_human", AwaitHumanPayload, dev_lane, "Show a message; wait for the operator.")
    async def await_human(p: AwaitHumanPayload, call: Call) -> JsonDict:
        return await on_device(call, lambda d: d.imaging.await_human(p.message))


def _register_table(registry: HandlerRegistry, family: str, label: str) -> None:
    def table(d: Microscope) -> AsyncGeometricTransformations | AsyncCenterings:
        imaging = d.imaging
        return imaging.geometric_transformations if family == "geometry" else imaging.centerings

    @registry.add(f"sem.{family}.list", NoPayload, Lane.DEVICE, f"List {label}.")
    async def list_(_: NoPayload, call: Call) -> JsonDict:
        result: JsonDict = await on_device(call, lambda d: table(d).list())
        return result

    @registry.add(
        f"sem.{family}.get", EntryRefPayload, Lane.DEVICE, f"Get one of the {label} (name or index)."
    )
    async def get(p: EntryRefPayload, call: Call) -> JsonDict:
        result: JsonDict = await on_device(call, lambda d: table(d).get(index=p.index, name=p.name))
        return result

    @registry.add(
        f"sem.{family}.set", EntrySetPayload, Lane.DEVICE, f"Set one of the {label}: x, optional y."
    )
    async def set_(p: EntrySetPayload, call: Call) -> JsonDict:
        result: JsonDict = await on_device(
            call, lambda d: table(d).set(index=p.index, name=p.name, x=p.x, y=p.y)
        )
        return result

    @registry.add(f"sem.{family}.reset", NoPayload, Lane.DEVICE, f"Reset all {label} to zero.")
    async def reset(_: NoPayload, call: Call) -> JsonDict:
        # Centerings have no reset capability: the facade sets each entry back to zero.
        result: JsonDict = await on_device(call, lambda d: table(d).reset())
        return result
