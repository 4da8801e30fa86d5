"""The Semphony control-server semantics without an instrument and without a transport.

Runs, sessions, device attachment, server-side guardrails, payload validation, image artifacts, the stored
"latest position" metric, operator prompts and fault injection live here once. An instrument plugs in by
subclassing :class:`ControlCore` and implementing :meth:`ControlCore._device_state` (what the guardrails need)
and :meth:`ControlCore._dispatch` (the capability on the instrument). Two instruments exist: the SEM simulator
(:class:`~agent.devices.simulator.control.SimulatedControlServer`) and OpenFIBSEM
(:class:`~agent.devices.openfibsem.control.OpenFibsemControlServer`). The in-process backends
(:class:`ControlCoreBackend`) and the testbed's FastAPI server expose a core, so every path runs the same
logic, guardrails included.

Errors are :class:`SemphonyApiError` with the HTTP status a server would send (400 invalid, 404 unknown,
409 conflict or stale, 501 not expressible on this device, 504 device timeout) or
:class:`SemphonyGuardrailException`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.devices.backend import DeviceBackend
from agent.devices.capabilities import ACTION_CAPABILITIES, Capability
from agent.devices.errors import SemphonyApiError, SemphonyUnsupportedError
from agent.devices.guardrails import DeviceState, ImagingGuardrails, check_capability, needs_state
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

__all__ = ["ControlCore", "ControlCoreBackend", "DeviceInfo", "StoredImage"]

_P = TypeVar("_P", bound=BaseModel)


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
class DeviceInfo:
    """A device the control server offers: id, slug, kind, the capabilities it provides, and the SDK
    features (``autofocus``, ``find_roi``) it declines, each with the reason."""

    id: int
    slug: str
    kind: str
    capabilities: frozenset[str]
    unsupported: Mapping[str, str] = field(default_factory=dict)


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


class ControlCore(ABC):
    """A Semphony control server over one instrument; subclasses provide the instrument."""

    def __init__(
        self,
        devices: Mapping[int, DeviceInfo],
        *,
        clock: Callable[[], float] = time.monotonic,
        latest_position_max_age_s: float = 60.0,
        max_stored_images: int = 64,
        human_auto_continue: bool = False,
        human_timeout_s: float = 3600.0,
        declined_capabilities: Mapping[str, str] | None = None,
    ) -> None:
        self.devices = dict(devices)
        self._clock = clock
        self._latest_max_age_s = latest_position_max_age_s
        self._max_stored_images = max_stored_images
        self._human_auto_continue = human_auto_continue
        self._human_timeout_s = human_timeout_s
        #: Capabilities the instrument cannot express at all, with the reason (answered 501, never faked).
        self.declined_capabilities = dict(declined_capabilities or {})
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

    # ------------------------------------------------------------------------------- the instrument's part
    @abstractmethod
    async def _device_state(self) -> DeviceState:
        """What the guardrails need, read from the instrument now."""

    @abstractmethod
    async def _dispatch(self, capability_id: str, parsed: BaseModel) -> dict[str, Any]:
        """Run a validated, guardrail-checked capability on the instrument."""

    def _on_prompt(self, message: str) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook: an operator prompt was raised (the simulator counts it as a device action)."""

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
        answer: dict[str, Any] = {
            "device_id": device.id,
            "device_slug": device.slug,
            "kind": device.kind,
            "session_id": session.id,
        }
        if device.unsupported:
            answer["unsupported"] = dict(device.unsupported)
        return answer

    # ------------------------------------------------------------------------------------------ commands
    def _remember_position(self, position: Mapping[str, Any]) -> None:
        stage = {axis: float(position[axis]) for axis in ("x", "y", "z", "r", "t")}
        self._latest_position = (stage, self._clock())

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one capability for a session: attachment check, guardrails, fault injection, dispatch."""
        session = self._open_session(run_id, session_id)
        body = dict(payload or {})
        declined = self.declined_capabilities.get(capability_id)
        if declined is not None:
            raise SemphonyUnsupportedError(f"{capability_id} is not available: {declined}", reason=declined)
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
            state = (
                await self._device_state()
                if needs_state(session.guardrails, capability_id, checked)
                else None
            )
            check_capability(session.guardrails, capability_id, checked, state)
        if capability_id == Capability.ACQUIRE and self.acquire_timeouts > 0:
            self.acquire_timeouts -= 1
            raise SemphonyApiError("device did not answer in time (injected)", status_code=504)
        if capability_id == Capability.STAGE_GET_LATEST_POSITION:
            result = self._latest()
        elif isinstance(parsed, AwaitHumanPayload):
            result = await self._await_human(parsed.message)
        else:
            result = await self._dispatch(capability_id, parsed)
        if capability_id in ACTION_CAPABILITIES:
            self.invocations.append((session.id, capability_id))
        return result

    def _latest(self) -> dict[str, Any]:
        if self.stale_latest_positions > 0:
            self.stale_latest_positions -= 1
            raise SemphonyApiError("stored stage position is stale (injected)", status_code=409)
        if self._latest_position is None:
            raise SemphonyApiError("no stage position reported yet", status_code=409)
        position, at = self._latest_position
        age = self._clock() - at
        if age > self._latest_max_age_s:
            raise SemphonyApiError(f"stored stage position is stale ({age:.1f} s old)", status_code=409)
        return {**position, "age_s": age}

    # ---------------------------------------------------------------------------------------- artifacts
    def _store_image(self, png: bytes, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Keep an acquired image (oldest evicted past the limit); returns the metadata with its new id."""
        image_id = f"img-{next(self._image_ids):06d}"
        stored = {**metadata, "image_id": image_id}
        stored.setdefault("acquired_at", datetime.now(UTC).isoformat())
        self._images[image_id] = StoredImage(image_id, png, stored)
        while len(self._images) > self._max_stored_images:
            self._images.popitem(last=False)
        return stored

    def image(self, image_id: str) -> StoredImage:
        """A stored artifact (404 when unknown or already evicted)."""
        stored = self._images.get(str(image_id))
        if stored is None:
            raise SemphonyApiError(f"unknown image {image_id!r}", status_code=404)
        return stored

    # ----------------------------------------------------------------------------------- human prompts
    async def _await_human(self, message: str) -> dict[str, Any]:
        prompt = _Prompt(next(self._prompt_ids), message, asyncio.Event(), datetime.now(UTC).isoformat())
        self._on_prompt(message)
        if self._human_auto_continue:
            return {"prompt_id": prompt.id, "message": message, "continued": True, "operator": "auto"}
        self._prompts[prompt.id] = prompt
        try:
            await asyncio.wait_for(prompt.event.wait(), self._human_timeout_s)
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


class ControlCoreBackend(DeviceBackend):
    """A :class:`DeviceBackend` that calls a :class:`ControlCore` in process (no network)."""

    def __init__(self, server: ControlCore) -> None:
        self.core = server

    async def create_run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_run`."""
        return self.core.create_run(name, resume=resume, metadata=metadata, system=system)

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.get_run`."""
        return self.core.get_run(run_id)

    async def create_session(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_session`."""
        return self.core.create_session(run_id)

    async def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.close_session`."""
        return self.core.close_session(run_id, session_id)

    async def set_guardrails(
        self, run_id: int, session_id: int, guardrails: dict[str, Any] | None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.set_guardrails`."""
        return self.core.set_guardrails(run_id, session_id, guardrails)

    async def attach(
        self,
        run_id: int,
        session_id: int,
        *,
        device_slug: str | None,
        device_id: int | None,
        kind: str | None,
        force_close: bool = False,
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.attach`."""
        return self.core.attach(
            run_id,
            session_id,
            device_slug=device_slug,
            device_id=device_id,
            kind=kind,
            force_close=force_close,
        )

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.invoke`."""
        return await self.core.invoke(run_id, session_id, capability_id, payload)

    async def download(self, image_id: str) -> bytes:
        """See :meth:`DeviceBackend.download`."""
        return self.core.image(image_id).png

    async def close(self) -> None:
        """Nothing to release in process (subclasses holding an instrument override this)."""
