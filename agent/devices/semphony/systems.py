"""Device classes of the Semphony SDK: ``ImagingDevice`` (with ``.imaging``, ``.stage``, ``.chamber``) and
``DeformationDevice``.

They are synchronous wrappers over the asynchronous facade (:mod:`agent.devices.microscope`): each method runs
the facade's coroutine on the client's private loop (:meth:`SemphonyClient.call`), so the guardrail checks and
the capability calls exist once, shared with the daemon. Autofocus and ROI navigation are added by the
top-level ``semphony`` package, which sits above ``agent.autofocus`` and ``agent.roi``.
"""

from __future__ import annotations

import math
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.devices.errors import SemphonyApiError
from agent.devices.identity import InstrumentKey
from agent.devices.microscope import (
    SCAN_ROTATION,
    AsyncDeformationDevice,
    AsyncDevice,
    AsyncGeometricTransformations,
    AsyncTable,
    DeviceSession,
    Microscope,
    wrap_deg,
)
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.devices.semphony.client import SemphonyClient, Session

__all__ = [
    "Centerings",
    "DeformationDevice",
    "GeometricTransformations",
    "ImagingChamber",
    "ImagingDevice",
    "ImagingInterface",
    "ImagingStageInterface",
]

_T = TypeVar("_T")


class _AttachedDevice:
    """Shared attach/invoke logic of imaging and deformation devices."""

    _kind = "imaging"

    def __init__(
        self, client: SemphonyClient, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        self.client = client
        self._aio = self._async_device(client, device_slug, device_id)
        self._session: Session | None = None

    def _async_device(
        self, client: SemphonyClient, device_slug: str | None, device_id: int | None
    ) -> AsyncDevice:
        return AsyncDevice(client.backend, device_slug=device_slug, device_id=device_id)

    @property
    def device_slug(self) -> str | None:
        """The device's slug (set by the server on attachment)."""
        return self._aio.device_slug

    @property
    def device_id(self) -> int | None:
        """The device's id (set by the server on attachment)."""
        return self._aio.device_id

    @property
    def unsupported(self) -> dict[str, str]:
        """SDK features the attached device declined (``autofocus``, ``find_roi``), with the reason."""
        return self._aio.unsupported

    @property
    def session(self) -> Session:
        """The session the device is attached to."""
        if self._session is None or self._session.closed:
            raise SemphonyApiError("device is not attached to an open session: call attach(session) first")
        return self._session

    def attach(self, session: Session, force_close: bool = False) -> None:
        """Attach to ``session`` (started if needed); ``force_close`` takes it from another session."""
        session.start()
        target = DeviceSession(self.client.backend, session.run.id, session.id, session.guardrails)
        self.client.call(self._aio.attach(target, force_close=force_close))
        self._session = session

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a facade coroutine on the client's loop, once the session is known to be open."""
        try:
            self.session  # noqa: B018 - raises when the session was closed through the SDK
        except SemphonyApiError:
            coro.close()
            raise
        return self.client.call(coro)

    def instrument_key(self) -> InstrumentKey:
        """The backend kind and the instrument's identity (from its metrics): what autofocus verdicts key on."""
        return self._call(self._aio.instrument_key())

    def _decline_if_unsupported(self, feature: str) -> None:
        """Raise :class:`SemphonyUnsupportedError` when the device declared ``feature`` unsupported."""
        self._aio.decline_if_unsupported(feature)

    def _invoke(self, capability: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call(self._aio.invoke(capability, payload))

    def invoke(self, capability_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Invoke any capability of the device (guardrails apply)."""
        return self._invoke(capability_id, payload)


class _SharkTable:
    """SharkSEM-style table (geometries or centerings) addressed by fuzzy name or index."""

    def __init__(self, device: _AttachedDevice, table: AsyncTable) -> None:
        self._device = device
        self._table = table

    def list(self) -> dict[str, Any]:
        """All entries: ``{index: {name, count, unit, limits}}``."""
        return self._device._call(self._table.list())

    def get(
        self, name_or_index: str | int | None = None, *, index: int | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Current value(s) of one entry, by fuzzy case-insensitive name or index."""
        AsyncTable.ref(name_or_index, index, name)  # argument errors before any coroutine exists
        return self._device._call(self._table.get(name_or_index, index=index, name=name))

    def set(
        self,
        name_or_index: str | int | None = None,
        *,
        index: int | None = None,
        name: str | None = None,
        x: float = 0.0,
        y: float | None = None,
    ) -> dict[str, Any]:
        """Set one entry: ``x`` and, for two-valued entries, ``y``."""
        AsyncTable.ref(name_or_index, index, name)
        return self._device._call(self._table.set(name_or_index, index=index, name=name, x=x, y=y))


class GeometricTransformations(_SharkTable):
    """``.imaging.geometric_transformations``: image shift, tilt correction, scan rotation, dynamic focus."""

    def __init__(self, device: _AttachedDevice, table: AsyncGeometricTransformations) -> None:
        super().__init__(device, table)
        self._geometries = table

    def reset(self) -> dict[str, Any]:
        """Reset every geometry to zero: ``{"reset": [indices]}``."""
        return self._device._call(self._geometries.reset())


class Centerings(_SharkTable):
    """``.imaging.centerings``: beam shift, gun shift/tilt, aperture alignment."""


class _FocusOpsAdapter:
    """Implements :class:`agent.autofocus.ops.FocusOps` over an :class:`ImagingInterface`."""

    def __init__(self, imaging: ImagingInterface) -> None:
        self._imaging = imaging

    def get_focus_params(self) -> Mapping[str, float]:
        return {k: float(v) for k, v in self._imaging.get_focus_params().items()}

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        return self._imaging.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y)

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        config = AcquisitionConfig(fov_um=fov_um, width=shape[1], height=shape[0], dwell_us=dwell_s * 1e6)
        return self._imaging.acquire(config, download=True).to_array()


class _RoiOpsAdapter(_FocusOpsAdapter):
    """Adds the stage, field-of-view and image-rotation operations ROI capture and relocation need.

    Implements :class:`agent.roi.ops.RotatableRoiOps`, so ``find_roi`` corrects a measured rotation by
    turning the scan ("Scan Rotation" geometry) rather than only reporting it.
    """

    def __init__(self, device: ImagingDevice) -> None:
        super().__init__(device.imaging)
        self._stage = device.stage

    def get_pos(self) -> dict[str, Any]:
        return self._stage.get_pos()

    def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> dict[str, Any]:
        return self._stage.move_to(x, y, z=z, r=r)

    def move_delta(
        self,
        dx: float = 0,
        dy: float = 0,
        dz: float | None = None,
        dr: float | None = None,
        dt: float | None = None,
    ) -> dict[str, Any]:
        return self._stage.move_delta(dx, dy, dz=dz, dr=dr, dt=dt)

    def set_view_field(self, fov_um: float) -> dict[str, Any]:
        return self._imaging.set_view_field(fov_um)

    # The same convention as the facade's RoiOpsAdapter (see agent.devices.microscope).
    def get_image_rotation_rad(self) -> float:
        scan_deg = float(self._imaging.geometric_transformations.get(SCAN_ROTATION)["x"])
        stage_r_deg = float(self._stage.get_pos().get("r", 0.0))
        return math.radians(wrap_deg(scan_deg - stage_r_deg))

    def set_image_rotation_rad(self, angle_rad: float) -> dict[str, Any]:
        if not math.isfinite(angle_rad):
            raise ValueError(f"image rotation must be finite, got {angle_rad}")
        stage_r_deg = float(self._stage.get_pos().get("r", 0.0))
        scan_deg = wrap_deg(math.degrees(angle_rad) + stage_r_deg)
        return self._imaging.geometric_transformations.set(SCAN_ROTATION, x=scan_deg)


class ImagingInterface:
    """``device.imaging``: acquisition, focus, field of view, beam, metrics, prompts."""

    #: Retries of an acquisition answered 504 (device timeout), and the pause before each retry.
    acquire_retries = 2
    acquire_retry_delay_s = 0.5

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device
        self._aio = device._scope.imaging
        self.geometric_transformations = GeometricTransformations(device, self._aio.geometric_transformations)
        self.centerings = Centerings(device, self._aio.centerings)

    def acquire(
        self, config: AcquisitionConfig, *, download: bool = False, target_path: str | None = None
    ) -> AcquisitionResult:
        """Acquire one frame; retries up to twice on 504. ``download``/``target_path`` fetch the artifact."""
        # The retry knobs are set on this interface (as in the reference); the facade does the retrying.
        self._aio.acquire_retries = self.acquire_retries
        self._aio.acquire_retry_delay_s = self.acquire_retry_delay_s
        return self._device._call(self._aio.acquire(config, download=download, target_path=target_path))

    def get_focus_params(self) -> dict[str, Any]:
        """``{wd_mm, stigm_x, stigm_y}``."""
        return self._device._call(self._aio.get_focus_params())

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> dict[str, Any]:
        """Set working distance (mm) and/or stigmators; only non-None values are sent."""
        return self._device._call(self._aio.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y))

    def set_view_field(self, fov_um: float) -> dict[str, Any]:
        """Set the field of view in µm without acquiring."""
        return self._device._call(self._aio.set_view_field(fov_um))

    def set_beam(self, enabled: bool) -> dict[str, Any]:
        """Beam on or off (guardrails: vacuum required for on)."""
        return self._device._call(self._aio.set_beam(enabled))

    def get_metrics(self) -> dict[str, Any]:
        """Device metrics snapshot (beam, vacuum, optics, stage, counters)."""
        return self._device._call(self._aio.get_metrics())

    def await_human(self, message: str) -> dict[str, Any]:
        """Pause until an operator clicks Continue for ``message``."""
        return self._device._call(self._aio.await_human(message))

    def focus_ops(self) -> _FocusOpsAdapter:
        """This interface as the :class:`~agent.autofocus.ops.FocusOps` an autofocus drives.

        ``em-agent autofocus validate`` measures through it directly, so that it also reports on a device that
        declines ``autofocus`` (which then fails there, as it should).
        """
        return _FocusOpsAdapter(self)


class ImagingChamber:
    """``device.chamber``: vacuum control."""

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device

    def vent(self) -> dict[str, Any]:
        """Vent the chamber (guardrails: beam must be off)."""
        return self._device._call(self._device._scope.chamber.vent())

    def pump(self) -> dict[str, Any]:
        """Pump the chamber; returns when pumped."""
        return self._device._call(self._device._scope.chamber.pump())


class ImagingStageInterface:
    """``device.stage``: positions in mm (x, y, z) and degrees (r, t)."""

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device
        self._aio = device._scope.stage

    def get_pos(self) -> dict[str, Any]:
        """Live stage position ``{x, y, z, r, t}``."""
        return self._device._call(self._aio.get_pos())

    def get_latest_pos(self) -> dict[str, Any]:
        """Last position the server stored (fast; SemphonyApiError with status 409 when stale)."""
        return self._device._call(self._aio.get_latest_pos())

    def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> dict[str, Any]:
        """Absolute move (mm, degrees); guardrails: soft limits."""
        return self._device._call(self._aio.move_to(x, y, z, r))

    def move_delta(
        self,
        dx: float = 0,
        dy: float = 0,
        dz: float | None = None,
        dr: float | None = None,
        dt: float | None = None,
    ) -> dict[str, Any]:
        """Relative move (mm, degrees); guardrails: fraction of the FOV and soft limits."""
        return self._device._call(self._aio.move_delta(dx, dy, dz, dr, dt))


class ImagingDevice(_AttachedDevice):
    """An imaging device (SEM): ``.imaging``, ``.stage``, ``.chamber``."""

    _kind = "imaging"
    #: The interface class behind ``.imaging`` (the top-level ``semphony`` package extends it).
    _imaging_class: type[ImagingInterface] = ImagingInterface

    def __init__(
        self, client: SemphonyClient, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        super().__init__(client, device_slug=device_slug, device_id=device_id)
        self.imaging = self._imaging_class(self)
        self.stage = ImagingStageInterface(self)
        self.chamber = ImagingChamber(self)

    def _async_device(
        self, client: SemphonyClient, device_slug: str | None, device_id: int | None
    ) -> AsyncDevice:
        return Microscope(client.backend, device_slug=device_slug, device_id=device_id)

    @property
    def _scope(self) -> Microscope:
        """The asynchronous device this one wraps."""
        scope = self._aio
        assert isinstance(scope, Microscope)
        return scope

    def acquire(
        self, config: AcquisitionConfig, *, download: bool = False, target_path: str | None = None
    ) -> AcquisitionResult:
        """Alias of ``imaging.acquire``."""
        return self.imaging.acquire(config, download=download, target_path=target_path)


class DeformationDevice(_AttachedDevice):
    """A deformation stage (tensile stage, load frame): attach, then invoke its capabilities."""

    _kind = "deformation"

    def _async_device(
        self, client: SemphonyClient, device_slug: str | None, device_id: int | None
    ) -> AsyncDevice:
        return AsyncDeformationDevice(client.backend, device_slug=device_slug, device_id=device_id)

    def status(self) -> dict[str, Any]:
        """Displacement (µm), load (N), motion state."""
        scope = self._aio
        assert isinstance(scope, AsyncDeformationDevice)
        return self._call(scope.status())

    def move(self, *, displacement_um: float | None = None, delta_um: float | None = None) -> dict[str, Any]:
        """Move the crosshead to an absolute displacement or by a delta, µm."""
        scope = self._aio
        assert isinstance(scope, AsyncDeformationDevice)
        return self._call(scope.move(displacement_um=displacement_um, delta_um=delta_um))
