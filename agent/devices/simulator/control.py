"""The Semphony control-server semantics over the simulator, without any transport.

Runs, sessions, device attachment, server-side guardrails, capability dispatch, image artifacts, the stored
"latest position" metric, operator prompts and fault injection live here once. Two transports expose it: the
in-process :class:`~agent.devices.simulator_backend.SimulatorBackend` and the testbed's FastAPI server
(``testbed/semphony_server``), so both paths run exactly the same logic.

Errors are :class:`SemphonyApiError` with the HTTP status a server would send (400 invalid, 404 unknown,
409 conflict or stale, 504 device timeout) or :class:`SemphonyGuardrailException`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.devices.capabilities import ACTION_CAPABILITIES, Capability
from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import DeviceState, ImagingGuardrails, check_capability, needs_state
from agent.devices.imageio import encode_png
from agent.devices.models import (
    AcquisitionConfig,
    AwaitHumanPayload,
    BeamPayload,
    DeformationMovePayload,
    EntryRefPayload,
    EntrySetPayload,
    FocusParamsPayload,
    MoveDeltaPayload,
    MoveToPayload,
    ViewFieldPayload,
)
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.deformation import DeformationSimulator
from agent.devices.simulator.sem import SemSimulator

__all__ = ["DEFORMATION_CAPABILITIES", "IMAGING_CAPABILITIES", "SimulatedControlServer", "StoredImage"]

_P = TypeVar("_P", bound=BaseModel)

IMAGING_CAPABILITIES: frozenset[str] = frozenset(
    c.value for c in Capability if not c.startswith("Deformation")
)
DEFORMATION_CAPABILITIES: frozenset[str] = frozenset(
    {Capability.DEFORMATION_STATUS, Capability.DEFORMATION_MOVE}
)


@dataclass
class _Run:
    id: int
    name: str
    system: str | None
    metadata: dict[str, Any]
    status: str = "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "system": self.system,
            "metadata": self.metadata,
        }


@dataclass
class _Session:
    id: int
    run_id: int
    status: str = "running"
    guardrails: ImagingGuardrails | None = None
    devices: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "status": self.status,
            "devices": sorted(self.devices),
            "guardrails": None if self.guardrails is None else self.guardrails.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class StoredImage:
    """An image artifact: PNG bytes and its acquisition metadata."""

    image_id: str
    png: bytes
    metadata: dict[str, Any]


@dataclass
class _Prompt:
    id: int
    message: str
    event: asyncio.Event
    created_at: str


@dataclass(frozen=True)
class _Device:
    id: int
    slug: str
    kind: str
    capabilities: frozenset[str]


class _Empty(BaseModel):
    """Capabilities without parameters still reject unknown fields."""

    model_config = ConfigDict(extra="forbid")


_PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    Capability.ACQUIRE: AcquisitionConfig,
    Capability.SET_VIEW_FIELD: ViewFieldPayload,
    Capability.SET_FOCUS_PARAMS: FocusParamsPayload,
    Capability.SET_BEAM: BeamPayload,
    Capability.STAGE_MOVE_TO: MoveToPayload,
    Capability.STAGE_MOVE_DELTA: MoveDeltaPayload,
    Capability.GEOMETRY_GET: EntryRefPayload,
    Capability.CENTERING_GET: EntryRefPayload,
    Capability.GEOMETRY_SET: EntrySetPayload,
    Capability.CENTERING_SET: EntrySetPayload,
    Capability.AWAIT_HUMAN: AwaitHumanPayload,
    Capability.DEFORMATION_MOVE: DeformationMovePayload,
}


def _payload(model: type[_P], payload: Mapping[str, Any]) -> _P:
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        raise SemphonyApiError(f"invalid payload: {errors}", status_code=400) from exc


class SimulatedControlServer:
    """A Semphony control server with one simulated SEM and one simulated deformation stage."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SimulatorConfig()
        self._clock = clock
        self.sem = SemSimulator(self.config, clock=clock)
        self.deformation = DeformationSimulator(self.config)
        self.devices = {
            1: _Device(1, self.config.imaging_slug, "imaging", IMAGING_CAPABILITIES),
            2: _Device(2, self.config.deformation_slug, "deformation", DEFORMATION_CAPABILITIES),
        }
        self._runs: dict[int, _Run] = {}
        self._sessions: dict[int, _Session] = {}
        self._attached: dict[int, int] = {}  # device id -> session id holding it
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._prompts: dict[int, _Prompt] = {}
        self._ids = itertools.count(1)
        self._image_ids = itertools.count(1)
        self._prompt_ids = itertools.count(1)
        self._latest_position: tuple[dict[str, float], float] | None = None
        #: Fault injection: the next N acquisitions answer 504 without acquiring.
        self.acquire_timeouts = 0
        #: Fault injection: the next N get_latest_pos answer 409 stale.
        self.stale_latest_positions = 0
        #: Every capability invocation accepted (after guardrails), for tests and the soak.
        self.invocations: list[tuple[int, str]] = []

    # ------------------------------------------------------------------------------------ runs, sessions
    def create_run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: Mapping[str, Any] | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        """Create a run, or resume the newest run of that name when ``resume``."""
        if not name or len(name) > 200:
            raise SemphonyApiError("run name must be 1-200 characters", status_code=400)
        if system is not None and system not in {d.slug for d in self.devices.values()}:
            raise SemphonyApiError(f"unknown system {system!r}", status_code=404)
        if resume:
            for run in sorted(self._runs.values(), key=lambda r: -r.id):
                if run.name == name:
                    if metadata:
                        run.metadata.update(metadata)
                    return run.as_dict()
        run = _Run(next(self._ids), name, system, dict(metadata or {}))
        self._runs[run.id] = run
        return run.as_dict()

    def get_run(self, run_id: int) -> dict[str, Any]:
        """One run."""
        return self._run(run_id).as_dict()

    def _run(self, run_id: int) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise SemphonyApiError(f"unknown run {run_id}", status_code=404)
        return run

    def _session(self, run_id: int, session_id: int) -> _Session:
        self._run(run_id)
        session = self._sessions.get(session_id)
        if session is None or session.run_id != run_id:
            raise SemphonyApiError(f"unknown session {session_id} of run {run_id}", status_code=404)
        return session

    def create_session(self, run_id: int) -> dict[str, Any]:
        """Open a session in a run (the run becomes ``running``)."""
        run = self._run(run_id)
        session = _Session(next(self._ids), run_id)
        self._sessions[session.id] = session
        run.status = "running"
        return session.as_dict()

    def get_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """One session."""
        return self._session(run_id, session_id).as_dict()

    def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """Finish a session (idempotent), release its devices; the run finishes with its last open session."""
        session = self._session(run_id, session_id)
        session.status = "finished"
        for device_id in list(session.devices):
            if self._attached.get(device_id) == session.id:
                del self._attached[device_id]
        if not any(s.status == "running" for s in self._sessions.values() if s.run_id == run_id):
            self._run(run_id).status = "finished"
        return session.as_dict()

    def set_guardrails(
        self, run_id: int, session_id: int, guardrails: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Install (or with ``None`` remove) the session's guardrails."""
        session = self._open_session(run_id, session_id)
        try:
            session.guardrails = (
                None if guardrails is None else ImagingGuardrails.model_validate(dict(guardrails))
            )
        except ValidationError as exc:
            raise SemphonyApiError(f"invalid guardrails: {exc.errors()[0]['msg']}", status_code=400) from exc
        return session.as_dict()

    def _open_session(self, run_id: int, session_id: int) -> _Session:
        session = self._session(run_id, session_id)
        if session.status != "running":
            raise SemphonyApiError(f"session {session_id} is {session.status}", status_code=409)
        return session

    def attach(
        self,
        run_id: int,
        session_id: int,
        *,
        device_slug: str | None = None,
        device_id: int | None = None,
        kind: str | None = None,
        force_close: bool = False,
    ) -> dict[str, Any]:
        """Attach a device to a session; a device held by another open session needs ``force_close``."""
        session = self._open_session(run_id, session_id)
        matches = [
            d
            for d in self.devices.values()
            if (device_id is None or d.id == device_id) and (device_slug is None or d.slug == device_slug)
        ]
        if (device_slug is None and device_id is None) or not matches:
            raise SemphonyApiError(f"unknown device slug={device_slug!r} id={device_id!r}", status_code=404)
        device = matches[0]
        if kind is not None and device.kind != kind:
            raise SemphonyApiError(
                f"device {device.slug!r} is a {device.kind} device, not {kind}", status_code=400
            )
        holder = self._attached.get(device.id)
        if holder is not None and holder != session.id:
            if not force_close:
                raise SemphonyApiError(
                    f"device {device.slug!r} is attached to session {holder}; use force_close",
                    status_code=409,
                )
            other = self._sessions[holder]
            self.close_session(other.run_id, other.id)
        self._attached[device.id] = session.id
        session.devices.add(device.id)
        return {
            "device_id": device.id,
            "device_slug": device.slug,
            "kind": device.kind,
            "session_id": session.id,
        }

    # ------------------------------------------------------------------------------------------ commands
    def _state(self) -> DeviceState:
        sem = self.sem
        pos = sem.position()
        return DeviceState(
            vacuum=sem.vacuum,
            beam_on=sem.beam_on,
            fov_um=sem.fov_um,
            x_mm=pos.x,
            y_mm=pos.y,
            z_mm=pos.z,
            r_deg=pos.r,
            t_deg=pos.t,
        )

    def _remember_position(self, position: Mapping[str, Any]) -> None:
        stage = {axis: float(position[axis]) for axis in ("x", "y", "z", "r", "t")}
        self._latest_position = (stage, self._clock())

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one capability for a session: attachment check, guardrails, fault injection, dispatch."""
        session = self._open_session(run_id, session_id)
        body = dict(payload or {})
        providers = [d for d in self.devices.values() if capability_id in d.capabilities]
        if not providers:
            raise SemphonyApiError(f"unknown capability {capability_id!r}", status_code=404)
        if not any(d.id in session.devices and self._attached.get(d.id) == session.id for d in providers):
            raise SemphonyApiError(
                f"no device attached to session {session_id} provides {capability_id!r}", status_code=409
            )
        model = _PAYLOAD_MODELS.get(capability_id, _Empty)
        parsed = _payload(model, body)
        if session.guardrails is not None:
            # Guardrails see the validated payload, so a malformed value is a 400, never a bypass.
            checked = parsed.model_dump(exclude_none=True)
            state = self._state() if needs_state(session.guardrails, capability_id, checked) else None
            check_capability(session.guardrails, capability_id, checked, state)
        if capability_id == Capability.ACQUIRE and self.acquire_timeouts > 0:
            self.acquire_timeouts -= 1
            raise SemphonyApiError("device did not answer in time (injected)", status_code=504)
        result = await self._dispatch(capability_id, parsed)
        if capability_id in ACTION_CAPABILITIES:
            self.invocations.append((session.id, capability_id))
        return result

    async def _dispatch(self, capability_id: str, parsed: BaseModel) -> dict[str, Any]:
        sem = self.sem
        match capability_id, parsed:
            case Capability.ACQUIRE, AcquisitionConfig():
                return await self._acquire(parsed)
            case Capability.SET_VIEW_FIELD, ViewFieldPayload():
                return await sem.set_view_field(parsed.fov_um)
            case Capability.GET_FOCUS_PARAMS, _:
                return sem.focus_params()
            case Capability.SET_FOCUS_PARAMS, FocusParamsPayload():
                return await sem.set_focus_params(parsed.wd_mm, parsed.stigm_x, parsed.stigm_y)
            case Capability.SET_BEAM, BeamPayload():
                return await sem.set_beam(parsed.enabled)
            case Capability.GET_METRICS, _:
                metrics = sem.metrics()
                self._remember_position(metrics["stage"])
                return metrics
            case Capability.VENT, _:
                return await sem.vent()
            case Capability.PUMP, _:
                return await sem.pump()
            case Capability.STAGE_GET_POSITION, _:
                position = sem.position().as_dict()
                self._remember_position(position)
                return position
            case Capability.STAGE_GET_LATEST_POSITION, _:
                return self._latest()
            case Capability.STAGE_MOVE_TO, MoveToPayload():
                moved = await sem.move_to(parsed.x, parsed.y, parsed.z, parsed.r, parsed.t)
                self._remember_position(moved.as_dict())
                return moved.as_dict()
            case Capability.STAGE_MOVE_DELTA, MoveDeltaPayload():
                moved = await sem.move_delta(parsed.dx, parsed.dy, parsed.dz, parsed.dr, parsed.dt)
                self._remember_position(moved.as_dict())
                return moved.as_dict()
            case ((Capability.GEOMETRY_LIST | Capability.CENTERING_LIST), _):
                return sem.table_list(_kind(capability_id))
            case ((Capability.GEOMETRY_SET | Capability.CENTERING_SET), EntrySetPayload()):
                return await sem.table_set(_kind(capability_id), parsed.key, parsed.x, parsed.y)
            case ((Capability.GEOMETRY_GET | Capability.CENTERING_GET), EntryRefPayload()):
                return sem.table_get(_kind(capability_id), parsed.key)
            case Capability.GEOMETRY_RESET, _:
                return await sem.geometry_reset()
            case Capability.AWAIT_HUMAN, AwaitHumanPayload():
                return await self._await_human(parsed.message)
            case Capability.DEFORMATION_STATUS, _:
                return self.deformation.status()
            case Capability.DEFORMATION_MOVE, DeformationMovePayload():
                return await self.deformation.move(
                    displacement_um=parsed.displacement_um, delta_um=parsed.delta_um
                )
        raise SemphonyApiError(f"unknown capability {capability_id!r}", status_code=404)

    def _latest(self) -> dict[str, Any]:
        if self.stale_latest_positions > 0:
            self.stale_latest_positions -= 1
            raise SemphonyApiError("stored stage position is stale (injected)", status_code=409)
        if self._latest_position is None:
            raise SemphonyApiError("no stage position reported yet", status_code=409)
        position, at = self._latest_position
        age = self._clock() - at
        if age > self.config.latest_position_max_age_s:
            raise SemphonyApiError(f"stored stage position is stale ({age:.1f} s old)", status_code=409)
        return {**position, "age_s": age}

    async def _acquire(self, config: AcquisitionConfig) -> dict[str, Any]:
        frame = await self.sem.acquire(
            width=config.width,
            height=config.height,
            dwell_us=config.dwell_us,
            fov_um=config.fov_um,
            scan_rotation_deg=config.scan_rotation_deg,
        )
        self._remember_position(frame.metadata["stage"])
        levels = 255.0 if config.bit_depth == 8 else 65535.0
        quantised = np.clip(np.rint(frame.image * levels), 0, levels)
        pixels = quantised.astype(np.uint8) if config.bit_depth == 8 else quantised.astype(np.uint16)
        image_id = f"img-{next(self._image_ids):06d}"
        metadata = {
            **frame.metadata,
            "image_id": image_id,
            "acquired_at": datetime.now(UTC).isoformat(),
            "detector": config.detector,
            "bit_depth": config.bit_depth,
            "name": config.name,
        }
        metadata.pop("frame", None)
        self._images[image_id] = StoredImage(image_id, encode_png(pixels), metadata)
        while len(self._images) > self.config.max_stored_images:
            self._images.popitem(last=False)
        return metadata

    def image(self, image_id: str) -> StoredImage:
        """A stored artifact (404 when unknown or already evicted)."""
        stored = self._images.get(str(image_id))
        if stored is None:
            raise SemphonyApiError(f"unknown image {image_id!r}", status_code=404)
        return stored

    # ----------------------------------------------------------------------------------- human prompts
    async def _await_human(self, message: str) -> dict[str, Any]:
        prompt = _Prompt(next(self._prompt_ids), message, asyncio.Event(), datetime.now(UTC).isoformat())
        self.sem.record_action("AwaitHuman", {"message": message})
        if self.config.human_auto_continue:
            return {"prompt_id": prompt.id, "message": message, "continued": True, "operator": "auto"}
        self._prompts[prompt.id] = prompt
        try:
            await asyncio.wait_for(prompt.event.wait(), self.config.human_timeout_s)
        except TimeoutError as exc:
            raise SemphonyApiError(f"no operator answered prompt {prompt.id}", status_code=504) from exc
        finally:
            self._prompts.pop(prompt.id, None)
        return {"prompt_id": prompt.id, "message": message, "continued": True, "operator": "operator"}

    def pending_prompts(self) -> list[dict[str, Any]]:
        """Prompts waiting for an operator."""
        return [
            {"prompt_id": p.id, "message": p.message, "created_at": p.created_at}
            for p in self._prompts.values()
        ]

    def continue_prompt(self, prompt_id: int) -> dict[str, Any]:
        """The operator clicks Continue (must run on the loop that awaits the prompt)."""
        prompt = self._prompts.get(prompt_id)
        if prompt is None:
            raise SemphonyApiError(f"no pending prompt {prompt_id}", status_code=404)
        prompt.event.set()
        return {"prompt_id": prompt_id, "continued": True}

    # ----------------------------------------------------------------------------------- test support
    def action_counts(self) -> dict[str, int]:
        """Device actions executed so far, by capability (imaging and deformation)."""
        return dict(self.sem.counters + self.deformation.counters)


def _kind(capability_id: str) -> str:
    return "geometry" if capability_id.startswith("Geometry") else "centering"
