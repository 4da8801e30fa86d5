"""Device classes of the Semphony SDK: ``ImagingDevice`` (with ``.imaging``, ``.stage``, ``.chamber``) and
``DeformationDevice``.

Every capability call goes through :meth:`_AttachedDevice._invoke`, which checks the session's guardrails on
the client side first (querying ``GetMetrics`` only when a rule depends on the device state) and then invokes
the capability through the client's backend, where the control server checks them again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agent.devices.capabilities import Capability
from agent.devices.errors import SemphonyApiError, SemphonyUnsupportedError
from agent.devices.guardrails import DeviceState, check_capability, needs_state
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.devices.semphony.client import SemphonyClient, Session

if TYPE_CHECKING:
    from agent.autofocus.models import AutofocusConfig, AutofocusResult
    from agent.roi import FindRoiResult, RoiSpec, SavedRoi

__all__ = [
    "Centerings",
    "DeformationDevice",
    "GeometricTransformations",
    "ImagingChamber",
    "ImagingDevice",
    "ImagingInterface",
    "ImagingStageInterface",
]

_log = logging.getLogger(__name__)


class _AttachedDevice:
    """Shared attach/invoke logic of imaging and deformation devices."""

    _kind = "imaging"

    def __init__(
        self, client: SemphonyClient, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        if device_slug is None and device_id is None:
            raise ValueError("give device_slug or device_id")
        self.client = client
        self.device_slug = device_slug
        self.device_id = device_id
        self._session: Session | None = None
        #: SDK features the attached device declined (``autofocus``, ``find_roi``), with the reason.
        self.unsupported: dict[str, str] = {}

    @property
    def session(self) -> Session:
        """The session the device is attached to."""
        if self._session is None or self._session.closed:
            raise SemphonyApiError("device is not attached to an open session: call attach(session) first")
        return self._session

    def attach(self, session: Session, force_close: bool = False) -> None:
        """Attach to ``session`` (started if needed); ``force_close`` takes it from another session."""
        session.start()
        data = self.client.call(
            self.client.backend.attach(
                session.run.id,
                session.id,
                device_slug=self.device_slug,
                device_id=self.device_id,
                kind=self._kind,
                force_close=force_close,
            )
        )
        self.device_id = int(data["device_id"])
        self.device_slug = str(data["device_slug"])
        unsupported = data.get("unsupported") or {}
        self.unsupported = {str(k): str(v) for k, v in dict(unsupported).items()}
        self._session = session

    def _decline_if_unsupported(self, feature: str) -> None:
        """Raise :class:`SemphonyUnsupportedError` when the device declared ``feature`` unsupported."""
        reason = self.unsupported.get(feature)
        if reason is not None:
            raise SemphonyUnsupportedError(
                f"{feature} is not available on {self.device_slug}: {reason}", reason=reason
            )

    def _invoke(self, capability: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        session = self.session
        body = dict(payload or {})
        guardrails = session.guardrails
        if guardrails is not None:
            state = None
            if needs_state(guardrails, capability, body):
                metrics = self.client.invoke_capability(session.run.id, session.id, Capability.GET_METRICS)
                state = DeviceState.from_metrics(metrics)
            check_capability(guardrails, capability, body, state)
        return self.client.invoke_capability(session.run.id, session.id, capability, body)

    def invoke(self, capability_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Invoke any capability of the device (guardrails apply)."""
        return self._invoke(capability_id, payload)


class _SharkTable:
    """SharkSEM-style table (geometries or centerings) addressed by fuzzy name or index."""

    _prefix = "Geometry"

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device

    def _ref(self, name_or_index: str | int | None, index: int | None, name: str | None) -> dict[str, Any]:
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

    def list(self) -> dict[str, Any]:
        """All entries: ``{index: {name, count, unit, limits}}``."""
        return self._device._invoke(f"{self._prefix}List")

    def get(
        self, name_or_index: str | int | None = None, *, index: int | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Current value(s) of one entry, by fuzzy case-insensitive name or index."""
        return self._device._invoke(f"{self._prefix}Get", self._ref(name_or_index, index, name))

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
        body = {**self._ref(name_or_index, index, name), "x": x}
        if y is not None:
            body["y"] = y
        return self._device._invoke(f"{self._prefix}Set", body)


class GeometricTransformations(_SharkTable):
    """``.imaging.geometric_transformations``: image shift, tilt correction, scan rotation, dynamic focus."""

    _prefix = "Geometry"

    def reset(self) -> dict[str, Any]:
        """Reset every geometry to zero: ``{"reset": [indices]}``."""
        return self._device._invoke(Capability.GEOMETRY_RESET)


class Centerings(_SharkTable):
    """``.imaging.centerings``: beam shift, gun shift/tilt, aperture alignment."""

    _prefix = "Centering"


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

    # Image rotation in the stage frame (agent.roi.ops): the scan rotation minus the stage rotation, since
    # turning the stage by r turns the specimen, hence the image, by -r (how the simulator forms images).
    def get_image_rotation_rad(self) -> float:
        scan_deg = float(self._imaging.geometric_transformations.get(_SCAN_ROTATION)["x"])
        stage_r_deg = float(self._stage.get_pos().get("r", 0.0))
        return math.radians(_wrap_deg(scan_deg - stage_r_deg))

    def set_image_rotation_rad(self, angle_rad: float) -> dict[str, Any]:
        if not math.isfinite(angle_rad):
            raise ValueError(f"image rotation must be finite, got {angle_rad}")
        stage_r_deg = float(self._stage.get_pos().get("r", 0.0))
        # Wrapped into ±180° so the value stays well inside the geometry's ±360° limits.
        scan_deg = _wrap_deg(math.degrees(angle_rad) + stage_r_deg)
        return self._imaging.geometric_transformations.set(_SCAN_ROTATION, x=scan_deg)


_SCAN_ROTATION = "Scan Rotation"


def _wrap_deg(angle_deg: float) -> float:
    return (angle_deg + 180.0) % 360.0 - 180.0


class ImagingInterface:
    """``device.imaging``: acquisition, focus, field of view, beam, metrics, ROI, autofocus, prompts."""

    #: Retries of an acquisition answered 504 (device timeout), and the pause before each retry.
    acquire_retries = 2
    acquire_retry_delay_s = 0.5

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device
        self.geometric_transformations = GeometricTransformations(device)
        self.centerings = Centerings(device)

    def acquire(
        self, config: AcquisitionConfig, *, download: bool = False, target_path: str | None = None
    ) -> AcquisitionResult:
        """Acquire one frame; retries up to twice on 504. ``download``/``target_path`` fetch the artifact."""
        payload = config.model_dump(mode="json")
        attempt = 0
        while True:
            try:
                data = self._device._invoke(Capability.ACQUIRE, payload)
                break
            except SemphonyApiError as exc:
                if exc.status_code != 504 or attempt >= self.acquire_retries:
                    raise
                attempt += 1
                _log.warning("acquire timed out (504); retry %d of %d", attempt, self.acquire_retries)
                time.sleep(self.acquire_retry_delay_s * attempt)
        try:
            result = AcquisitionResult.model_validate(data)
        except ValueError as exc:
            raise SemphonyApiError(f"malformed acquisition result: {exc}") from exc
        if (download or target_path) and result.image_id is not None:
            client = self._device.client
            if target_path is not None:
                saved = client.download_image(result.image_id, target_path=target_path)
                result.image_path = str(saved)
                if download:
                    with open(saved, "rb") as fh:
                        result.image_bytes = fh.read()
            else:
                blob = client.download_image(result.image_id)
                result.image_bytes = blob if isinstance(blob, bytes) else None
        return result

    def get_focus_params(self) -> dict[str, Any]:
        """``{wd_mm, stigm_x, stigm_y}``."""
        return self._device._invoke(Capability.GET_FOCUS_PARAMS)

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> dict[str, Any]:
        """Set working distance (mm) and/or stigmators; only non-None values are sent."""
        values = {"wd_mm": wd_mm, "stigm_x": stigm_x, "stigm_y": stigm_y}
        return self._device._invoke(
            Capability.SET_FOCUS_PARAMS, {k: v for k, v in values.items() if v is not None}
        )

    def set_view_field(self, fov_um: float) -> dict[str, Any]:
        """Set the field of view in µm without acquiring."""
        return self._device._invoke(Capability.SET_VIEW_FIELD, {"fov_um": fov_um})

    def set_beam(self, enabled: bool) -> dict[str, Any]:
        """Beam on or off (guardrails: vacuum required for on)."""
        return self._device._invoke(Capability.SET_BEAM, {"enabled": bool(enabled)})

    def get_metrics(self) -> dict[str, Any]:
        """Device metrics snapshot (beam, vacuum, optics, stage, counters)."""
        return self._device._invoke(Capability.GET_METRICS)

    def await_human(self, message: str) -> dict[str, Any]:
        """Pause until an operator clicks Continue for ``message``."""
        return self._device._invoke(Capability.AWAIT_HUMAN, {"message": message})

    def autofocus(self, config: AutofocusConfig) -> AutofocusResult:
        """Iterative autofocus and auto-stigmation (``agent.autofocus``; needs the ``autofocus`` extra)."""
        self._device._decline_if_unsupported("autofocus")
        try:
            from agent.autofocus import run_autofocus
        except ImportError as exc:
            raise SemphonyApiError(
                f"autofocus is not available (install em-agent[autofocus]): {exc}"
            ) from exc
        return run_autofocus(_FocusOpsAdapter(self), config)

    def save_roi(
        self,
        name: str,
        spec: RoiSpec,
        *,
        config: AcquisitionConfig | None = None,
        target_dir: str | None = None,
        inter_level_delay_s: float = 1.0,
    ) -> SavedRoi:
        """Capture a pyramidal ROI at the current stage position (``agent.roi``; needs the ``roi`` extra)."""
        try:
            from agent.roi import save_roi
        except ImportError as exc:
            raise SemphonyApiError(f"ROI capture is not available (install em-agent[roi]): {exc}") from exc
        return save_roi(
            _RoiOpsAdapter(self._device),
            name,
            spec,
            config=config,
            target_dir=target_dir,
            inter_level_delay_s=inter_level_delay_s,
        )

    def find_roi(
        self,
        roi_path: str,
        *,
        stage_mode: str = "same_session",
        initial_pose: dict[str, float] | None = None,
        start_level: str | None = None,
        base_config: AcquisitionConfig | None = None,
        max_initial_fov_um: float | None = None,
        max_zoom_out_retries: int = 0,
        max_iters: int = 8,
        max_iters_per_level: int = 4,
        px_tol: float = 15.0,
        rot_tol_rad: float = 0.017,
        scale_tol: float = 0.02,
        gain_xy: float = 0.8,
        gain_rot: float = 0.8,
        gain_fov: float = 0.8,
        min_confidence: float = 0.25,
    ) -> FindRoiResult:
        """Navigate back to a saved ROI by correlative matching (``agent.roi``; needs the ``roi`` extra)."""
        self._device._decline_if_unsupported("find_roi")
        try:
            from agent.roi import find_roi
        except ImportError as exc:
            raise SemphonyApiError(f"ROI relocation is not available (install em-agent[roi]): {exc}") from exc
        return find_roi(
            _RoiOpsAdapter(self._device),
            roi_path,
            stage_mode=stage_mode,
            initial_pose=initial_pose,
            start_level=start_level,
            base_config=base_config,
            max_initial_fov_um=max_initial_fov_um,
            max_zoom_out_retries=max_zoom_out_retries,
            max_iters=max_iters,
            max_iters_per_level=max_iters_per_level,
            px_tol=px_tol,
            rot_tol_rad=rot_tol_rad,
            scale_tol=scale_tol,
            gain_xy=gain_xy,
            gain_rot=gain_rot,
            gain_fov=gain_fov,
            min_confidence=min_confidence,
        )


class ImagingChamber:
    """``device.chamber``: vacuum control."""

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device

    def vent(self) -> dict[str, Any]:
        """Vent the chamber (guardrails: beam must be off)."""
        return self._device._invoke(Capability.VENT)

    def pump(self) -> dict[str, Any]:
        """Pump the chamber; returns when pumped."""
        return self._device._invoke(Capability.PUMP)


class ImagingStageInterface:
    """``device.stage``: positions in mm (x, y, z) and degrees (r, t)."""

    def __init__(self, device: ImagingDevice) -> None:
        self._device = device

    def get_pos(self) -> dict[str, Any]:
        """Live stage position ``{x, y, z, r, t}``."""
        return self._device._invoke(Capability.STAGE_GET_POSITION)

    def get_latest_pos(self) -> dict[str, Any]:
        """Last position the server stored (fast; SemphonyApiError with status 409 when stale)."""
        return self._device._invoke(Capability.STAGE_GET_LATEST_POSITION)

    def move_to(self, x: float, y: float, z: float | None = None, r: float | None = None) -> dict[str, Any]:
        """Absolute move (mm, degrees); guardrails: soft limits."""
        body: dict[str, Any] = {"x": x, "y": y}
        if z is not None:
            body["z"] = z
        if r is not None:
            body["r"] = r
        return self._device._invoke(Capability.STAGE_MOVE_TO, body)

    def move_delta(
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
        return self._device._invoke(Capability.STAGE_MOVE_DELTA, body)


class ImagingDevice(_AttachedDevice):
    """An imaging device (SEM): ``.imaging``, ``.stage``, ``.chamber``."""

    _kind = "imaging"

    def __init__(
        self, client: SemphonyClient, *, device_slug: str | None = None, device_id: int | None = None
    ) -> None:
        super().__init__(client, device_slug=device_slug, device_id=device_id)
        self.imaging = ImagingInterface(self)
        self.stage = ImagingStageInterface(self)
        self.chamber = ImagingChamber(self)

    def acquire(
        self, config: AcquisitionConfig, *, download: bool = False, target_path: str | None = None
    ) -> AcquisitionResult:
        """Alias of ``imaging.acquire``."""
        return self.imaging.acquire(config, download=download, target_path=target_path)


class DeformationDevice(_AttachedDevice):
    """A deformation stage (tensile stage, load frame): attach, then invoke its capabilities."""

    _kind = "deformation"

    def status(self) -> dict[str, Any]:
        """Displacement (µm), load (N), motion state."""
        return self._invoke(Capability.DEFORMATION_STATUS)

    def move(self, *, displacement_um: float | None = None, delta_um: float | None = None) -> dict[str, Any]:
        """Move the crosshead to an absolute displacement or by a delta, µm."""
        body = {"displacement_um": displacement_um, "delta_um": delta_um}
        return self._invoke(Capability.DEFORMATION_MOVE, {k: v for k, v in body.items() if v is not None})
