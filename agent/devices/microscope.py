"""The asynchronous device facade: the Semphony device surface as coroutines over a :class:`DeviceBackend`.

This is what the daemon drives (instruction handlers, ROI capture and relocation, autofocus). Every call is a
coroutine on the caller's own event loop: no thread and no second loop sit between a handler and the backend,
so a time limit or a stop cancels a device call where it waits. Blocking drivers (OpenFIBSEM, a vendor SDK)
are called off the loop inside their backend, at its edge.

The synchronous SDK (:mod:`agent.devices.semphony`) wraps these same classes for scripts and notebooks.

Usage::

    session = await DeviceSession.open(backend, "em-agent", guardrails=ImagingGuardrails())
    scope = Microscope(backend, device_slug="sem-001")
    await scope.attach(session, force_close=True)
    await scope.stage.move_to(1.0, 2.0)
    frame = await scope.imaging.acquire(AcquisitionConfig(fov_um=50), download=True)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.devices.backend import DeviceBackend
from agent.devices.capabilities import Capability
from agent.devices.errors import SemphonyApiError, SemphonyUnsupportedError
from agent.devices.guardrails import DeviceState, ImagingGuardrails, check_capability, needs_state
from agent.devices.identity import InstrumentKey, instrument_key
from agent.devices.models import AcquisitionConfig, AcquisitionResult

__all__ = [
    "SCAN_ROTATION",
    "AsyncCenterings",
    "AsyncChamber",
    "AsyncDeformationDevice",
    "AsyncDevice",
    "AsyncGeometricTransformations",
    "AsyncImaging",
    "AsyncStage",
    "AsyncTable",
    "DeviceSession",
    "FocusOpsAdapter",
    "Microscope",
    "RoiOpsAdapter",
    "open_microscope",
    "wrap_deg",
    "write_atomically",
]

_log = logging.getLogger(__name__)

#: The geometry entry that rotates the scan (ROI relocation corrects a measured rotation with it).
SCAN_ROTATION = "Scan Rotation"


@dataclass
class DeviceSession:
    """A session of a run on the backend, with the guardrails installed on it."""

    backend: DeviceBackend
    run_id: int
    id: int
    guardrails: ImagingGuardrails | None = None
    closed: bool = False

    @classmethod
    async def open(
        cls, backend: DeviceBackend, run_name: str, *, guardrails: ImagingGuardrails | None = None
    ) -> DeviceSession:
        """Resume (or create) the run ``run_name``, open a session in it and install ``guardrails``."""
        run = await backend.create_run(run_name, resume=True)
        run_id = int(run["id"])
        data = await backend.create_session(run_id)
        session = cls(backend, run_id, int(data["id"]), guardrails)
        if guardrails is not None:
            await backend.set_guardrails(run_id, session.id, guardrails.model_dump(mode="json"))
        return session

    async def close(self) -> None:
        """Finish the session on the server (idempotent)."""
        if self.closed:
            return
        self.closed = True
        await self.backend.close_session(self.run_id, self.id)


class AsyncDevice:
    """Shared attach/invoke logic of the asynchronous devices."""

    _kind = "imaging"

    def __init__(
        self, backend: DeviceBackend, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        if device_slug is None and device_id is None:
            raise ValueError("give device_slug or device_id")
        self.backend = backend
        self.device_slug = device_slug
        self.device_id = device_id
        self._session: DeviceSession | None = None
        #: SDK features the attached device declined (``autofocus``, ``find_roi``), with the reason.
        self.unsupported: dict[str, str] = {}

    @property
    def session(self) -> DeviceSession:
        """The session the device is attached to."""
        if self._session is None or self._session.closed:
            raise SemphonyApiError("device is not attached to an open session: call attach(session) first")
        return self._session

    async def attach(self, session: DeviceSession, force_close: bool = False) -> None:
        """Attach to ``session``; ``force_close`` takes the device from another session."""
        data = await self.backend.attach(
            session.run_id,
            session.id,
            device_slug=self.device_slug,
            device_id=self.device_id,
            kind=self._kind,
            force_close=force_close,
        )
        self.device_id = int(data["device_id"])
        self.device_slug = str(data["device_slug"])
        unsupported = data.get("unsupported") or {}
        self.unsupported = {str(k): str(v) for k, v in dict(unsupported).items()}
        self._session = session

    def decline_if_unsupported(self, feature: str) -> None:
        """Raise :class:`SemphonyUnsupportedError` when the device declared ``feature`` unsupported."""
        reason = self.unsupported.get(feature)
        if reason is not None:
            raise SemphonyUnsupportedError(
                f"{feature} is not available on {self.device_slug}: {reason}", reason=reason
            )

    async def instrument_key(self) -> InstrumentKey:
        """The backend kind and the instrument's identity (from its metrics): what autofocus verdicts key on."""
        metrics = await self.invoke(Capability.GET_METRICS)
        return instrument_key(self.backend.kind, metrics, self.device_slug)

    async def invoke(self, capability: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Invoke a capability: the session's guardrails first (client side), then the backend's own."""
        session = self.session
        body = dict(payload or {})
        guardrails = session.guardrails
        if guardrails is not None:
            state = None
            if needs_state(guardrails, capability, body):
                metrics = await self.backend.invoke(session.run_id, session.id, Capability.GET_METRICS)
                state = DeviceState.from_metrics(metrics)
            check_capability(guardrails, capability, body, state)
        return await self.backend.invoke(session.run_id, session.id, capability, body)


class AsyncTable:
    """SharkSEM-style table (geometries or centerings) addressed by fuzzy name or index."""

    _prefix = "Geometry"

    def __init__(self, device: AsyncDevice) -> None:
        self._device = device

    @staticmethod
    def ref(name_or_index: str | int | None, index: int | None, name: str | None) -> dict[str, Any]:
        """The payload naming one entry; exactly one of the three must be given."""
        given = [v for v in (name_or_index, index, name) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of name_or_index, index= and name=")
        if index is not None:
            return {"index": index}
        if name is not None:
            return {"name": name}
        if isinstance(name_or_index, int) and not isinstance(name_or_index, bool):
            return {"index": name_or_index}
        return {"name": str(name_or_index)}

    async def list(self) -> dict[str, Any]:
        """All entries: ``{index: {name, count, unit, limits}}``."""
        return await self._device.invoke(f"{self._prefix}List")

    async def get(
        self, name_or_index: str | int | None = None, *, index: int | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Current value(s) of one entry, by fuzzy case-insensitive name or index."""
        return await self._device.invoke(f"{self._prefix}Get", self.ref(name_or_index, index, name))

    async def set(
        self,
        name_or_index: str | int | None = None,
        *,
        index: int | None = None,
        name: str | None = None,
        x: float = 0.0,
        y: float | None = None,
    ) -> dict[str, Any]:
        """Set one entry: ``x`` and, for two-valued entries, ``y``."""
        body = {**self.ref(name_or_index, index, name), "x": x}
        if y is not None:
            body["y"] = y
        return await self._device.invoke(f"{self._prefix}Set", body)


class AsyncGeometricTransformations(AsyncTable):
    """``.imaging.geometric_transformations``: image shift, tilt correction, scan rotation, dynamic focus."""

    _prefix = "Geometry"

    async def reset(self) -> dict[str, Any]:
        """Reset every geometry to zero: ``{"reset": [indices]}``."""
        return await self._device.invoke(Capability.GEOMETRY_RESET)


class AsyncCenterings(AsyncTable):
    """``.imaging.centerings``: beam shift, gun shift/tilt, aperture alignment."""

    _prefix = "Centering"

    async def reset(self) -> dict[str, Any]:
        """Set every entry (both axes where it has two) back to zero; centerings have no reset capability."""
        listing = await self.list()
        entries = listing.get("entries", listing)
        reset: list[int] = []
        for key, entry in entries.items():
            index = int(key)
            count = int(entry.get("count", 1)) if isinstance(entry, dict) else 1
            await self.set(index=index, x=0.0, y=0.0 if count > 1 else None)
            reset.append(index)
        return {"reset": sorted(reset)}


def write_atomically(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` through a ``.partial`` file, so a reader never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(blob)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SemphonyApiError(f"cannot write {path}: {exc}") from exc


class AsyncImaging:
    """``device.imaging``: acquisition, focus, field of view, beam, metrics, prompts."""

    #: Retries of an acquisition answered 504 (device timeout), and the pause before each retry.
    acquire_retries = 2
    acquire_retry_delay_s = 0.5

    def __init__(self, device: AsyncDevice) -> None:
        self._device = device
        self.geometric_transformations = AsyncGeometricTransformations(device)
        self.centerings = AsyncCenterings(device)

    async def acquire(
        self, config: AcquisitionConfig, *, download: bool = False, target_path: str | None = None
    ) -> AcquisitionResult:
        """Acquire one frame; retries up to twice on 504. ``download``/``target_path`` fetch the artifact."""
        payload = config.model_dump(mode="json")
        attempt = 0
        while True:
            try:
                data = await self._device.invoke(Capability.ACQUIRE, payload)
                break
            except SemphonyApiError as exc:
                if exc.status_code != 504 or attempt >= self.acquire_retries:
                    raise
                attempt += 1
                _log.warning("acquire timed out (504); retry %d of %d", attempt, self.acquire_retries)
                await asyncio.sleep(self.acquire_retry_delay_s * attempt)
        try:
            result = AcquisitionResult.model_validate(data)
        except ValueError as exc:
            raise SemphonyApiError(f"malformed acquisition result: {exc}") from exc
        if (download or target_path) and result.image_id is not None:
            blob = await self._device.backend.download(str(result.image_id))
            if target_path is not None:
                write_atomically(Path(target_path), blob)
                result.image_path = str(Path(target_path))
            if download:
                result.image_bytes = blob
        return result

    async def get_focus_params(self) -> dict[str, Any]:
        """``{wd_mm, stigm_x, stigm_y}``."""
        return await self._device.invoke(Capability.GET_FOCUS_PARAMS)

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> dict[str, Any]:
        """Set working distance (mm) and/or stigmators; only non-None values are sent."""
        values = {"wd_mm": wd_mm, "stigm_x": stigm_x, "stigm_y": stigm_y}
        return await self._device.invoke(
            Capability.SET_FOCUS_PARAMS, {k: v for k, v in values.items() if v is not None}
        )

    async def set_view_field(self, fov_um: float) -> dict[str, Any]:
        """Set the field of view in µm without acquiring."""
        return await self._device.invoke(Capability.SET_VIEW_FIELD, {"fov_um": fov_um})

    async def set_beam(self, enabled: bool) -> dict[str, Any]:
        """Beam on or off (guardrails: vacuum required for on)."""
        return await self._device.invoke(Capability.SET_BEAM, {"enabled": bool(enabled)})

    async def get_metrics(self) -> dict[str, Any]:
        """Device metrics snapshot (beam, vacuum, optics, stage, counters)."""
        return await self._device.invoke(Capability.GET_METRICS)

    async def await_human(self, message: str) -> dict[str, Any]:
        """Pause until an operator clicks Continue for ``message``."""
        return await self._device.invoke(Capability.AWAIT_HUMAN, {"message": message})


class AsyncChamber:
    """``device.chamber``: vacuum control."""

    def __init__(self, device: AsyncDevice) -> None:
        self._device = device

    async def vent(self) -> dict[str, Any]:
        """Vent the chamber (guardrails: beam must be off)."""
        return await self._device.invoke(Capability.VENT)

    async def pump(self) -> dict[str, Any]:
        """Pump the chamber; returns when pumped."""
        return await self._device.invoke(Capability.PUMP)


class AsyncStage:
    """``device.stage``: positions in mm (x, y, z) and degrees (r, t)."""

    def __init__(self, device: AsyncDevice) -> None:
        self._device = device

    async def get_pos(self) -> dict[str, Any]:
        """Live stage position ``{x, y, z, r, t}``."""
        return await self._device.invoke(Capability.STAGE_GET_POSITION)

    async def get_latest_pos(self) -> dict[str, Any]:
        """Last position the server stored (fast; SemphonyApiError with status 409 when stale)."""
        return await self._device.invoke(Capability.STAGE_GET_LATEST_POSITION)

    async def move_to(
        self, x: float, y: float, z: float | None = None, r: float | None = None
    ) -> dict[str, Any]:
        """Absolute move (mm, degrees); guardrails: soft limits."""
        body: dict[str, Any] = {"x": x, "y": y}
        if z is not None:
            body["z"] = z
        if r is not None:
            body["r"] = r
        return await self._device.invoke(Capability.STAGE_MOVE_TO, body)

    async def move_delta(
        self,
        dx: float = 0,
        dy: float = 0,
        dz: float | None = None,
        dr: float | None = None,
        dt: float | None = None,
    ) -> dict[str, Any]:
        """Relative move (mm, degrees); guardrails: fraction of the FOV and soft limits."""
        body: dict[str, Any] = {"dx": dx, "dy": dy}
        for key, value in (("dz", dz), ("dr", dr), ("dt", dt)):
            if value is not None:
                body[key] = value
        return await self._device.invoke(Capability.STAGE_MOVE_DELTA, body)


class Microscope(AsyncDevice):
    """An imaging device (SEM) driven with coroutines: ``.imaging``, ``.stage``, ``.chamber``."""

    _kind = "imaging"

    def __init__(
        self, backend: DeviceBackend, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        super().__init__(backend, device_slug=device_slug, device_id=device_id)
        self.imaging = AsyncImaging(self)
        self.stage = AsyncStage(self)
        self.chamber = AsyncChamber(self)

    def focus_ops(self) -> FocusOpsAdapter:
        """This device as the asynchronous focus operations the autofocus drives."""
        return FocusOpsAdapter(self)

    def roi_ops(self) -> RoiOpsAdapter:
        """This device as the asynchronous stage, field-of-view and rotation operations ROI capture needs."""
        return RoiOpsAdapter(self)


class AsyncDeformationDevice(AsyncDevice):
    """A deformation stage (tensile stage, load frame) driven with coroutines."""

    _kind = "deformation"

    async def status(self) -> dict[str, Any]:
        """Displacement (µm), load (N), motion state."""
        return await self.invoke(Capability.DEFORMATION_STATUS)

    async def move(
        self, *, displacement_um: float | None = None, delta_um: float | None = None
    ) -> dict[str, Any]:
        """Move the crosshead to an absolute displacement or by a delta, µm."""
        body = {"displacement_um": displacement_um, "delta_um": delta_um}
        return await self.invoke(
            Capability.DEFORMATION_MOVE, {k: v for k, v in body.items() if v is not None}
        )


class FocusOpsAdapter:
    """The autofocus's asynchronous focus operations (``agent.autofocus.ops.AsyncFocusOps``) over a device."""

    def __init__(self, device: Microscope) -> None:
        self._imaging = device.imaging

    async def get_focus_params(self) -> Mapping[str, float]:
        """``{wd_mm, stigm_x, stigm_y}`` as floats."""
        return {k: float(v) for k, v in (await self._imaging.get_focus_params()).items()}

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        """Set the given values (``None`` keeps the current one)."""
        return await self._imaging.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y)

    async def acquire_image(
        self, *, fov_um: float, shape: tuple[int, int], dwell_s: float
    ) -> NDArray[np.float32]:
        """Acquire and download one frame as a float32 array."""
        config = AcquisitionConfig(fov_um=fov_um, width=shape[1], height=shape[0], dwell_us=dwell_s * 1e6)
        return (await self._imaging.acquire(config, download=True)).to_array()


class RoiOpsAdapter(FocusOpsAdapter):
    """Adds the stage, field-of-view and image-rotation operations ROI capture and relocation need.

    Implements ``agent.roi.ops.AsyncRotatableRoiOps``, so ``find_roi`` corrects a measured rotation by turning
    the scan ("Scan Rotation" geometry) rather than only reporting it.
    """

    def __init__(self, device: Microscope) -> None:
        super().__init__(device)
        self._stage = device.stage

    async def get_pos(self) -> dict[str, Any]:
        """Live stage position."""
        return await self._stage.get_pos()

    async def move_to(
        self, x: float, y: float, z: float | None = None, r: float | None = None
    ) -> dict[str, Any]:
        """Absolute stage move (mm, degrees)."""
        return await self._stage.move_to(x, y, z=z, r=r)

    async def move_delta(
        self,
        dx: float = 0,
        dy: float = 0,
        dz: float | None = None,
        dr: float | None = None,
        dt: float | None = None,
    ) -> dict[str, Any]:
        """Relative stage move (mm, degrees)."""
        return await self._stage.move_delta(dx, dy, dz=dz, dr=dr, dt=dt)

    async def set_view_field(self, fov_um: float) -> dict[str, Any]:
        """Set the field of view (µm)."""
        return await self._imaging.set_view_field(fov_um)

    # Image rotation in the stage frame (agent.roi.ops): the scan rotation minus the stage rotation, since
    # turning the stage by r turns the specimen, hence the image, by -r (how the simulator forms images).
    async def get_image_rotation_rad(self) -> float:
        """Angle of the image axes in the stage frame."""
        scan_deg = float((await self._imaging.geometric_transformations.get(SCAN_ROTATION))["x"])
        stage_r_deg = float((await self._stage.get_pos()).get("r", 0.0))
        return math.radians(wrap_deg(scan_deg - stage_r_deg))

    async def set_image_rotation_rad(self, angle_rad: float) -> dict[str, Any]:
        """Turn the scan so that the image axes make ``angle_rad`` with the stage axes."""
        if not math.isfinite(angle_rad):
            raise ValueError(f"image rotation must be finite, got {angle_rad}")
        stage_r_deg = float((await self._stage.get_pos()).get("r", 0.0))
        # Wrapped into ±180° so the value stays well inside the geometry's ±360° limits.
        scan_deg = wrap_deg(math.degrees(angle_rad) + stage_r_deg)
        return await self._imaging.geometric_transformations.set(SCAN_ROTATION, x=scan_deg)


def wrap_deg(angle_deg: float) -> float:
    """``angle_deg`` wrapped into [-180°, 180°)."""
    return (angle_deg + 180.0) % 360.0 - 180.0


async def open_microscope(
    backend: DeviceBackend,
    *,
    run_name: str = "em-agent",
    device_slug: str = "sem-001",
    guardrails: ImagingGuardrails | None = None,
    force_close: bool = True,
) -> Microscope:
    """Resume the run, open a guarded session and attach the imaging device (the daemon's way in).

    ``force_close`` (default) takes the device over from a session a crashed predecessor never closed. The
    session is closed again when the attachment fails.
    """
    session = await DeviceSession.open(backend, run_name, guardrails=guardrails)
    scope = Microscope(backend, device_slug=device_slug)
    try:
        await scope.attach(session, force_close=force_close)
    except BaseException:
        await session.close()
        raise
    return scope
