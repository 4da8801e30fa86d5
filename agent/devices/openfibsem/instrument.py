"""The SDK's calls in OpenFIBSEM's terms: one blocking method per capability, units converted at this edge.

The Semphony SDK speaks mm (stage x, y, z; working distance), degrees (stage r, t; scan rotation), µm (field of
view, beam shift) and µs (dwell). OpenFIBSEM speaks SI: metres, radians and seconds. Every method here runs on
the :class:`~agent.devices.openfibsem.worker.DeviceWorker` thread, never on an event loop.

OpenFIBSEM is a FIB-SEM library; the SDK's imaging device is the SEM, so every beam call here addresses the
electron beam (``BeamType.ELECTRON``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import DeviceState
from agent.devices.models import AcquisitionConfig

__all__ = ["OpenFibsemInstrument", "vacuum_state"]

_MM = 1e-3
_UM = 1e-6

#: The SDK's default detector name: image with whatever detector the microscope has selected.
DEFAULT_DETECTOR = "SE"


def vacuum_state(raw: object) -> str:
    """OpenFIBSEM's chamber state ("Pumped", "Vented", ... as the vendor reports it) in the SDK's words.

    Anything not recognisably pumped, pumping, venting or vented is ``"unknown (<raw>)"``, which the
    guardrails treat as not pumped (beam on is refused).
    """
    text = str(raw).strip().lower()
    for state in ("pumped", "pumping", "venting", "vented"):
        if text == state:
            return state
    return f"unknown ({raw})"


def _float(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SemphonyApiError(
            f"OpenFIBSEM reported a non-numeric {what}: {value!r}", status_code=502
        ) from exc
    return number


class OpenFibsemInstrument:
    """An OpenFIBSEM ``FibsemMicroscope`` (connected) behind the SDK's units and shapes."""

    def __init__(self, microscope: Any) -> None:
        from fibsem.structures import BeamType

        self.microscope = microscope
        self._beam = BeamType.ELECTRON

    # ------------------------------------------------------------------------------------------ stage
    def position(self) -> dict[str, float]:
        """Live stage position ``{x, y, z mm; r, t degrees}``."""
        pos = self.microscope.get_stage_position()
        return {
            "x": _float(pos.x, "stage x") / _MM,
            "y": _float(pos.y, "stage y") / _MM,
            "z": _float(pos.z, "stage z") / _MM,
            "r": math.degrees(_float(pos.r, "stage r")),
            "t": math.degrees(_float(pos.t, "stage t")),
        }

    def move_to(
        self, x: float, y: float, z: float | None, r: float | None, t: float | None
    ) -> dict[str, float]:
        """Absolute move in the RAW frame; axes given as None keep their value."""
        from fibsem.structures import FibsemStagePosition

        target = FibsemStagePosition(
            x=x * _MM,
            y=y * _MM,
            z=None if z is None else z * _MM,
            r=None if r is None else math.radians(r),
            t=None if t is None else math.radians(t),
            coordinate_system="RAW",
        )
        self.microscope.move_stage_absolute(target)
        return self.position()

    def move_delta(
        self, dx: float, dy: float, dz: float | None, dr: float | None, dt: float | None
    ) -> dict[str, float]:
        """Relative move; axes not given do not move."""
        from fibsem.structures import FibsemStagePosition

        delta = FibsemStagePosition(
            x=dx * _MM,
            y=dy * _MM,
            z=(dz or 0.0) * _MM,
            r=math.radians(dr or 0.0),
            t=math.radians(dt or 0.0),
            coordinate_system="RAW",
        )
        self.microscope.move_stage_relative(delta)
        return self.position()

    # ----------------------------------------------------------------------------------------- optics
    def focus_params(self) -> dict[str, float]:
        """``{wd_mm, stigm_x, stigm_y}`` (stigmators in the vendor's units, passed through)."""
        stig = self.microscope.get_stigmation(self._beam)
        return {
            "wd_mm": _float(self.microscope.get_working_distance(self._beam), "working distance") / _MM,
            "stigm_x": _float(stig.x, "stigmator x"),
            "stigm_y": _float(stig.y, "stigmator y"),
        }

    def set_focus_params(
        self, wd_mm: float | None, stigm_x: float | None, stigm_y: float | None
    ) -> dict[str, float]:
        """Set the working distance and/or stigmators; values not given are kept."""
        from fibsem.structures import Point

        if wd_mm is not None:
            self.microscope.set_working_distance(wd_mm * _MM, self._beam)
        if stigm_x is not None or stigm_y is not None:
            current = self.microscope.get_stigmation(self._beam)
            x = float(current.x) if stigm_x is None else stigm_x
            y = float(current.y) if stigm_y is None else stigm_y
            self.microscope.set_stigmation(Point(x, y), self._beam)
        return self.focus_params()

    def fov_um(self) -> float:
        """Horizontal field width, µm."""
        return _float(self.microscope.get_field_of_view(self._beam), "field of view") / _UM

    def set_view_field(self, fov_um: float) -> dict[str, float]:
        """Set the horizontal field width (µm); answers the value the microscope took."""
        self.microscope.set_field_of_view(fov_um * _UM, self._beam)
        return {"fov_um": self.fov_um()}

    def scan_rotation_deg(self) -> float:
        """Scan rotation, degrees."""
        return math.degrees(_float(self.microscope.get_scan_rotation(self._beam), "scan rotation"))

    def set_scan_rotation_deg(self, degrees: float) -> float:
        """Set the scan rotation (degrees); answers the value the microscope took."""
        self.microscope.set_scan_rotation(math.radians(degrees), self._beam)
        return self.scan_rotation_deg()

    def beam_shift_um(self) -> tuple[float, float]:
        """Electron beam shift, µm."""
        shift = self.microscope.get_beam_shift(self._beam)
        return _float(shift.x, "beam shift x") / _UM, _float(shift.y, "beam shift y") / _UM

    def set_beam_shift_um(self, x: float, y: float) -> tuple[float, float]:
        """Set the electron beam shift (µm); answers the value the microscope took."""
        from fibsem.structures import Point

        self.microscope.set_beam_shift(Point(x * _UM, y * _UM), self._beam)
        return self.beam_shift_um()

    # ------------------------------------------------------------------------------------ beam, vacuum
    def beam_on(self) -> bool:
        """Whether the electron beam is on."""
        return bool(self.microscope.is_on(self._beam))

    def set_beam(self, enabled: bool) -> dict[str, Any]:
        """Switch the electron beam on or off; answers the state the microscope reports afterwards."""
        if enabled:
            self.microscope.turn_on(self._beam)
        else:
            self.microscope.turn_off(self._beam)
        state = self.beam_on()
        if state != enabled:
            raise SemphonyApiError(
                f"OpenFIBSEM reports the beam {'on' if state else 'off'} after switching it "
                f"{'on' if enabled else 'off'}",
                status_code=502,
            )
        return {"beam_on": state}

    def vacuum(self) -> str:
        """Chamber state in the SDK's words (see :func:`vacuum_state`)."""
        return vacuum_state(self.microscope.get("chamber_state"))

    def pump(self) -> dict[str, Any]:
        """Pump the chamber; answers the state reached."""
        reached = vacuum_state(self.microscope.pump())
        return {"vacuum": reached, "beam_on": self.beam_on()}

    def vent(self) -> dict[str, Any]:
        """Vent the chamber; answers the state reached."""
        reached = vacuum_state(self.microscope.vent())
        return {"vacuum": reached, "beam_on": self.beam_on()}

    # -------------------------------------------------------------------------------------- snapshots
    def state(self) -> DeviceState:
        """What the guardrails need."""
        pos = self.position()
        return DeviceState(
            vacuum=self.vacuum(),
            beam_on=self.beam_on(),
            fov_um=self.fov_um(),
            x_mm=pos["x"],
            y_mm=pos["y"],
            z_mm=pos["z"],
            r_deg=pos["r"],
            t_deg=pos["t"],
        )

    def metrics(self) -> dict[str, Any]:
        """A metrics snapshot in the shape the simulator's ``GetMetrics`` has (beam, vacuum, optics, stage)."""
        m = self.microscope
        info = m.system.info
        return {
            "beam": {
                "on": self.beam_on(),
                "hv_kv": _float(m.get_beam_voltage(self._beam), "beam voltage") / 1e3,
                "current_pa": _float(m.get_beam_current(self._beam), "beam current") * 1e12,
            },
            "vacuum": {"state": self.vacuum(), "pressure": m.get("chamber_pressure")},
            "optics": {
                **self.focus_params(),
                "fov_um": self.fov_um(),
                "scan_rotation_deg": self.scan_rotation_deg(),
                "beam_shift_um": list(self.beam_shift_um()),
            },
            "stage": self.position(),
            "instrument": {
                "library": "OpenFIBSEM",
                "manufacturer": info.manufacturer,
                "model": info.model,
                "serial_number": info.serial_number,
                "software_version": info.software_version,
                "fibsem_version": info.fibsem_version,
            },
        }

    # ---------------------------------------------------------------------------------------- imaging
    def acquire(self, config: AcquisitionConfig) -> tuple[npt.NDArray[Any], dict[str, Any]]:
        """Acquire one electron image: the pixels (uint8 or uint16, as the microscope returns them) and the
        SDK's acquisition metadata."""
        from fibsem.structures import ImageSettings

        m = self.microscope
        if config.scan_rotation_deg is not None:
            self.set_scan_rotation_deg(config.scan_rotation_deg)
        if config.detector != DEFAULT_DETECTOR:
            m.set_detector_type(config.detector, self._beam)
        if config.fov_um is not None:
            # As on the simulator, an acquisition's field of view becomes the current one.
            m.set_field_of_view(config.fov_um * _UM, self._beam)
        hfw = self.fov_um() * _UM
        settings = ImageSettings(
            resolution=(config.width, config.height),
            dwell_time=float(config.dwell_us * 1e-6),
            hfw=float(hfw),
            beam_type=self._beam,
            autocontrast=False,
            save=False,
        )
        started = time.monotonic()
        image = m.acquire_image(image_settings=settings)
        frame_time_s = time.monotonic() - started
        pixels = _pixels(np.asarray(image.data))
        height, width = pixels.shape
        pixel_size = getattr(getattr(image, "metadata", None), "pixel_size", None)
        pixel_size_m = _float(pixel_size.x, "pixel size") if pixel_size is not None else hfw / max(width, 1)
        metadata = {
            "width": width,
            "height": height,
            "fov_um": hfw / _UM,
            "pixel_size_nm": pixel_size_m * 1e9,
            "dwell_us": config.dwell_us,
            **self.focus_params(),
            "scan_rotation_deg": self.scan_rotation_deg(),
            "stage": self.position(),
            "frame_time_s": frame_time_s,
            "detector": str(m.get_detector_type(self._beam)),
            "bit_depth": 8 if pixels.dtype == np.uint8 else 16,
            "name": config.name,
        }
        return pixels, metadata


def _pixels(data: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A 2-D uint8/uint16 array from what the microscope returned (no rescaling of integer data)."""
    if data.ndim == 3:
        data = data[..., 0]
    if data.ndim != 2 or data.size == 0:
        raise SemphonyApiError(f"OpenFIBSEM returned an image of shape {data.shape}", status_code=502)
    if data.dtype in (np.uint8, np.uint16):
        return np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):
        clipped: npt.NDArray[Any] = np.clip(data, 0, 65535).astype(np.uint16)
        return clipped
    finite = np.nan_to_num(data.astype(np.float64))
    low, high = float(finite.min()), float(finite.max())
    scaled = (finite - low) / (high - low) if high > low else np.zeros_like(finite)
    return np.rint(scaled * 65535).astype(np.uint16)
