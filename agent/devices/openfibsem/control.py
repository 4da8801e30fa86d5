"""The Semphony control-server semantics over an OpenFIBSEM microscope.

Runs, sessions, attachment, guardrails (checked here before every call, as on every backend), artifacts and
the stored latest position are :class:`~agent.devices.control_core.ControlCore`'s. This module maps each
capability to OpenFIBSEM through :class:`~agent.devices.openfibsem.instrument.OpenFibsemInstrument`, on the
backend's single :class:`~agent.devices.openfibsem.worker.DeviceWorker` thread with a time limit per call.

What OpenFIBSEM cannot express is declined with the reason (:class:`SemphonyUnsupportedError`, 501), never
approximated: see :data:`DECLINED_CAPABILITIES`, :data:`DECLINED_GEOMETRIES` and :data:`DECLINED_CENTERINGS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.devices.capabilities import Capability
from agent.devices.control_core import ControlCore, DeviceInfo
from agent.devices.errors import SemphonyApiError, SemphonyUnsupportedError
from agent.devices.guardrails import DeviceState
from agent.devices.imageio import encode_png
from agent.devices.models import (
    AcquisitionConfig,
    BeamPayload,
    EntryRefPayload,
    EntrySetPayload,
    FocusParamsPayload,
    MoveDeltaPayload,
    MoveToPayload,
    ViewFieldPayload,
)
from agent.devices.naming import resolve_entry
from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.openfibsem.instrument import OpenFibsemInstrument
from agent.devices.openfibsem.worker import DeviceWorker

__all__ = [
    "DECLINED_CAPABILITIES",
    "DECLINED_CENTERINGS",
    "DECLINED_GEOMETRIES",
    "DEMO_UNSUPPORTED",
    "OPENFIBSEM_CAPABILITIES",
    "OpenFibsemControlServer",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Capabilities OpenFIBSEM expresses (geometries and centerings only in part: see the tables below).
OPENFIBSEM_CAPABILITIES: frozenset[str] = frozenset(
    {
        Capability.ACQUIRE,
        Capability.SET_VIEW_FIELD,
        Capability.GET_FOCUS_PARAMS,
        Capability.SET_FOCUS_PARAMS,
        Capability.SET_BEAM,
        Capability.GET_METRICS,
        Capability.VENT,
        Capability.PUMP,
        Capability.STAGE_GET_POSITION,
        Capability.STAGE_GET_LATEST_POSITION,
        Capability.STAGE_MOVE_TO,
        Capability.STAGE_MOVE_DELTA,
        Capability.GEOMETRY_LIST,
        Capability.GEOMETRY_GET,
        Capability.GEOMETRY_SET,
        Capability.GEOMETRY_RESET,
        Capability.CENTERING_LIST,
        Capability.CENTERING_GET,
        Capability.CENTERING_SET,
    }
)

#: Capabilities OpenFIBSEM has no counterpart for, with the reason given to the caller.
DECLINED_CAPABILITIES: Mapping[str, str] = {
    Capability.AWAIT_HUMAN: "OpenFIBSEM has no operator prompt: there is no user interface in which to show "
    "the message and wait for Continue (a Semphony control server provides one)",
    Capability.DEFORMATION_STATUS: "OpenFIBSEM drives no deformation stage (tensile stage, load frame)",
    Capability.DEFORMATION_MOVE: "OpenFIBSEM drives no deformation stage (tensile stage, load frame)",
}

# The SharkSEM table entries the SDK addresses by fuzzy name. Only those with an OpenFIBSEM control are
# offered (listed, read, set); naming any other one is declined with the reason.
_GEOMETRIES: tuple[tuple[str, str], ...] = (("Scan Rotation", "deg"),)
_CENTERINGS: tuple[tuple[str, str], ...] = (("Beam Shift", "um"),)
DECLINED_GEOMETRIES: Mapping[str, str] = {
    "Image Shift": "OpenFIBSEM has one beam/image shift control; it is offered as the 'Beam Shift' centering",
    "Tilt Correction": "OpenFIBSEM has no tilt-correction control",
    "Dynamic Focus": "OpenFIBSEM has no dynamic-focus control",
}
DECLINED_CENTERINGS: Mapping[str, str] = {
    "Gun Shift": "OpenFIBSEM has no gun-shift control",
    "Gun Tilt": "OpenFIBSEM has no gun-tilt control",
    "Objective Aperture": "OpenFIBSEM has no objective-aperture alignment control",
}

#: SDK features declined on OpenFIBSEM's DemoMicroscope, whose frames do not depend on the instrument state.
DEMO_UNSUPPORTED: Mapping[str, str] = {
    "autofocus": "OpenFIBSEM's DemoMicroscope returns synthetic frames (random noise under a fixed text "
    "overlay) that do not change with working distance or stigmation, so image-based autofocus has "
    "nothing to measure",
    "find_roi": "OpenFIBSEM's DemoMicroscope returns synthetic frames that do not change with the stage "
    "position, so image matching would report the region found wherever the stage is",
}

DEVICE_ID = 1


class OpenFibsemControlServer(ControlCore):
    """A Semphony control server with one imaging device: the OpenFIBSEM microscope ``connect`` returns.

    ``connect`` (blocking; run on the worker at the first attachment) builds and connects an OpenFIBSEM
    ``FibsemMicroscope``. The microscope is not touched before that, so the agent starts while it is off.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        config: OpenFibsemConfig | None = None,
        device_slug: str = "sem-001",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or OpenFibsemConfig()
        self._connect = connect
        self._slug = device_slug
        self.worker = DeviceWorker()
        self.instrument: OpenFibsemInstrument | None = None
        super().__init__(
            {DEVICE_ID: DeviceInfo(DEVICE_ID, device_slug, "imaging", OPENFIBSEM_CAPABILITIES)},
            clock=clock,
            declined_capabilities=DECLINED_CAPABILITIES,
        )

    # ------------------------------------------------------------------------------------ connection
    async def connect(self) -> OpenFibsemInstrument:
        """Connect to the microscope once (later calls return the connected instrument)."""
        if self.instrument is None:
            microscope = await self.worker.call(
                "connect", self._connect, timeout_s=self.config.connect_timeout_s
            )
            self.instrument = OpenFibsemInstrument(microscope)
            self.devices[DEVICE_ID] = DeviceInfo(
                DEVICE_ID,
                self._slug,
                "imaging",
                OPENFIBSEM_CAPABILITIES,
                unsupported=DEMO_UNSUPPORTED if _is_demo(microscope) else {},
            )
        return self.instrument

    async def aclose(self) -> None:
        """Disconnect (bounded by ``stop_timeout_s``) and stop the worker.

        While a call is still running (its caller was cancelled by the close) the disconnect is not queued
        behind it: the connection is left to the worker, which ends after that call.
        """
        instrument, self.instrument = self.instrument, None
        busy = self.worker.running
        if busy is not None:
            log.warning("device.openfibsem_close_while_busy", extra={"call": busy})
        try:
            if instrument is not None and busy is None:
                await self.worker.call(
                    "disconnect", instrument.microscope.disconnect, timeout_s=self.config.stop_timeout_s
                )
        except Exception as exc:  # closing reports, it does not raise
            log.warning("device.openfibsem_disconnect_failed", extra={"error": str(exc)})
        finally:
            self.worker.close()

    async def _on_worker(self, label: str, fn: Callable[[OpenFibsemInstrument], _T], timeout_s: float) -> _T:
        instrument = await self.connect()
        try:
            return await self.worker.call(label, lambda: fn(instrument), timeout_s=timeout_s)
        except SemphonyApiError:
            raise
        except Exception as exc:
            raise SemphonyApiError(
                f"OpenFIBSEM {label} failed: {type(exc).__name__}: {exc}", status_code=502
            ) from exc

    # ------------------------------------------------------------------------------- capabilities
    async def _device_state(self) -> DeviceState:
        return await self._on_worker("read state", OpenFibsemInstrument.state, self.config.call_timeout_s)

    async def _dispatch(self, capability_id: str, parsed: BaseModel) -> dict[str, Any]:
        t = self.config.call_timeout_s
        match capability_id, parsed:
            case Capability.ACQUIRE, AcquisitionConfig():
                return await self._acquire(parsed)
            case Capability.SET_VIEW_FIELD, ViewFieldPayload():
                fov = parsed.fov_um
                return await self._on_worker("set field of view", lambda i: i.set_view_field(fov), t)
            case Capability.GET_FOCUS_PARAMS, _:
                return await self._on_worker("read focus", OpenFibsemInstrument.focus_params, t)
            case Capability.SET_FOCUS_PARAMS, FocusParamsPayload():
                p = parsed
                return await self._on_worker(
                    "set focus", lambda i: i.set_focus_params(p.wd_mm, p.stigm_x, p.stigm_y), t
                )
            case Capability.SET_BEAM, BeamPayload():
                enabled = parsed.enabled
                return await self._on_worker("switch beam", lambda i: i.set_beam(enabled), t)
            case Capability.GET_METRICS, _:
                metrics = await self._on_worker("read metrics", OpenFibsemInstrument.metrics, t)
                self._remember_position(metrics["stage"])
                return metrics
            case Capability.VENT, _:
                return await self._on_worker("vent", OpenFibsemInstrument.vent, self.config.vacuum_timeout_s)
            case Capability.PUMP, _:
                return await self._on_worker("pump", OpenFibsemInstrument.pump, self.config.vacuum_timeout_s)
            case Capability.STAGE_GET_POSITION, _:
                position = await self._on_worker("read stage position", OpenFibsemInstrument.position, t)
                self._remember_position(position)
                return position
            case Capability.STAGE_MOVE_TO, MoveToPayload():
                a = parsed
                moved = await self._on_worker(
                    "absolute stage move", lambda i: i.move_to(a.x, a.y, a.z, a.r, a.t), t
                )
                self._remember_position(moved)
                return moved
            case Capability.STAGE_MOVE_DELTA, MoveDeltaPayload():
                d = parsed
                moved = await self._on_worker(
                    "relative stage move", lambda i: i.move_delta(d.dx, d.dy, d.dz, d.dr, d.dt), t
                )
                self._remember_position(moved)
                return moved
            case Capability.GEOMETRY_LIST, _:
                return _listing(_GEOMETRIES)
            case Capability.CENTERING_LIST, _:
                return _listing(_CENTERINGS)
            case ((Capability.GEOMETRY_GET | Capability.CENTERING_GET), EntryRefPayload()):
                return await self._table_get(capability_id, parsed.key)
            case ((Capability.GEOMETRY_SET | Capability.CENTERING_SET), EntrySetPayload()):
                return await self._table_set(capability_id, parsed)
            case Capability.GEOMETRY_RESET, _:
                await self._on_worker("reset scan rotation", lambda i: i.set_scan_rotation_deg(0.0), t)
                return {"reset": [0]}
        raise SemphonyApiError(f"unknown capability {capability_id!r}", status_code=404)

    async def _acquire(self, config: AcquisitionConfig) -> dict[str, Any]:
        def acquire(instrument: OpenFibsemInstrument) -> tuple[bytes, dict[str, Any]]:
            pixels, metadata = instrument.acquire(config)
            return encode_png(pixels), metadata

        png, metadata = await self._on_worker("acquire", acquire, self.config.call_timeout_s)
        self._remember_position(metadata["stage"])
        return self._store_image(png, metadata)

    # ------------------------------------------------------------------------- geometries, centerings
    def _resolve(self, capability_id: str, key: str | int) -> int:
        geometry = capability_id.startswith("Geometry")
        offered = _GEOMETRIES if geometry else _CENTERINGS
        declined = DECLINED_GEOMETRIES if geometry else DECLINED_CENTERINGS
        kind = "geometry" if geometry else "centering"
        names = [name for name, _ in offered]
        if isinstance(key, int) or str(key).strip().isdigit():
            try:
                return resolve_entry(names, key)
            except LookupError as exc:
                raise SemphonyApiError(f"unknown {kind}: {exc}", status_code=404) from exc
        every = [*names, *declined]
        try:
            index = resolve_entry(every, key)
        except LookupError as exc:
            raise SemphonyApiError(f"unknown {kind}: {exc}", status_code=404) from exc
        if index >= len(names):
            reason = declined[every[index]]
            raise SemphonyUnsupportedError(
                f"{kind} {every[index]!r} is not available: {reason}", reason=reason
            )
        return index

    async def _table_get(self, capability_id: str, key: str | int) -> dict[str, Any]:
        index = self._resolve(capability_id, key)
        t = self.config.call_timeout_s
        if capability_id.startswith("Geometry"):
            degrees = await self._on_worker("read scan rotation", OpenFibsemInstrument.scan_rotation_deg, t)
            return {**_describe(_GEOMETRIES, index), "x": degrees}
        x, y = await self._on_worker("read beam shift", OpenFibsemInstrument.beam_shift_um, t)
        return {**_describe(_CENTERINGS, index), "x": x, "y": y}

    async def _table_set(self, capability_id: str, parsed: EntrySetPayload) -> dict[str, Any]:
        index = self._resolve(capability_id, parsed.key)
        t = self.config.call_timeout_s
        if capability_id.startswith("Geometry"):
            if parsed.y is not None:
                raise SemphonyApiError("Scan Rotation takes one value (x); y was given", status_code=400)
            value = parsed.x
            degrees = await self._on_worker("set scan rotation", lambda i: i.set_scan_rotation_deg(value), t)
            return {**_describe(_GEOMETRIES, index), "x": degrees}
        if parsed.y is None:
            current_y = (await self._on_worker("read beam shift", OpenFibsemInstrument.beam_shift_um, t))[1]
        else:
            current_y = parsed.y
        sx, sy = parsed.x, current_y
        x, y = await self._on_worker("set beam shift", lambda i: i.set_beam_shift_um(sx, sy), t)
        return {**_describe(_CENTERINGS, index), "x": x, "y": y}


def _describe(table: tuple[tuple[str, str], ...], index: int) -> dict[str, Any]:
    name, unit = table[index]
    count = 2 if unit == "um" else 1
    # OpenFIBSEM does not report the range of these controls; the microscope enforces its own.
    return {"index": index, "name": name, "count": count, "unit": unit, "limits": None}


def _listing(table: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {str(i): _describe(table, i) for i in range(len(table))}


def _is_demo(microscope: Any) -> bool:
    try:
        from fibsem.microscopes.simulator import DemoMicroscope
    except ImportError:
        return False
    return isinstance(microscope, DemoMicroscope)
