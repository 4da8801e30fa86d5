"""A physics-based SEM simulator: the instrument's state, its timing and its image formation inputs.

What it models (sem-reference.md §10):

* **Vacuum and beam.** ``vented -> pumping -> pumped -> venting -> vented`` with pump/vent durations; an HV
  interlock refuses beam on without vacuum and switches the beam off when the chamber is vented.
* **Stage.** x, y, z in mm, rotation and tilt in degrees, hardware travel limits, travel time at a finite
  speed plus settling. A move lands with a small random **positioning error** that the encoders do not see:
  the reported position is the commanded one, the imaged position is not. This is what ROI
  relocation has to correct.
* **Optics.** Field of view, scan rotation (plus stage rotation), working distance against a **true
  in-focus WD** that depends on the stage (seeded offset, specimen tilt, stage height), stigmators against
  seeded ideal values, image and beam shift from the SharkSEM-style geometry and centering tables, slow
  **drift** of the image.
* **Imaging.** The image itself (specimen, anisotropic PSF, shot noise vs dwell) is formed by
  :func:`agent.devices.simulator.optics.render_image`; this class computes its inputs. Frame time follows
  SBEMimage: ``dwell x pixels x 1.1 + 0.08 s``.
* **Bookkeeping.** Every state-changing action is counted and logged (tests check nothing ran twice).

All durations are multiplied by ``SimulatorConfig.time_factor``. Device operations are serialised by one lock,
like a real instrument that does one thing at a time; queries (metrics, positions) never wait for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.devices.errors import SemphonyApiError
from agent.devices.identity import simulator_instrument_info as instrument_info
from agent.devices.naming import resolve_entry
from agent.devices.simulator import optics
from agent.devices.simulator.config import SimulatorConfig

__all__ = ["ActionRecord", "Frame", "GeometryEntry", "SemSimulator", "StagePosition", "instrument_info"]

_DISPLAY_WIDTH_M = 0.127  # magnification convention: 127 mm (Polaroid) display width / field of view


@dataclass(frozen=True)
class StagePosition:
    """A stage position: x, y, z in mm; r (rotation) and t (tilt) in degrees."""

    x: float
    y: float
    z: float
    r: float
    t: float

    def as_dict(self) -> dict[str, float]:
        """The Semphony wire form ``{x, y, z, r, t}``."""
        return {"x": self.x, "y": self.y, "z": self.z, "r": self.r, "t": self.t}


@dataclass
class GeometryEntry:
    """One SharkSEM geometry or centering: name, number of values, unit, limits and current values."""

    name: str
    count: int
    unit: str
    limit: float
    values: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def describe(self, index: int) -> dict[str, Any]:
        """The ``list()``/``get()`` wire form."""
        return {
            "index": index,
            "name": self.name,
            "count": self.count,
            "unit": self.unit,
            "limits": [-self.limit, self.limit],
        }


@dataclass(frozen=True)
class ActionRecord:
    """One state-changing device action, in execution order."""

    seq: int
    capability: str
    params: dict[str, Any]
    monotonic_s: float


@dataclass(frozen=True)
class Frame:
    """An acquired frame (float32 image in [0, 1]) and its acquisition metadata."""

    image: npt.NDArray[np.float32]
    metadata: dict[str, Any]


def _geometries() -> list[GeometryEntry]:
    # Names follow TESCAN's geometry table; only shift and rotation change the simulated image.
    return [
        GeometryEntry("Image Shift", 2, "um", 50.0),
        GeometryEntry("Tilt Correction", 1, "deg", 90.0),
        GeometryEntry("Scan Rotation", 1, "deg", 360.0),
        GeometryEntry("Dynamic Focus", 1, "mm/mm", 10.0),
    ]


def _centerings() -> list[GeometryEntry]:
    return [
        GeometryEntry("Beam Shift", 2, "um", 20.0),
        GeometryEntry("Gun Shift", 2, "%", 100.0),
        GeometryEntry("Gun Tilt", 2, "%", 100.0),
        GeometryEntry("Objective Aperture", 2, "um", 100.0),
    ]


def _in(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


class SemSimulator:
    """The simulated instrument. All public coroutines are device operations; plain methods are queries."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SimulatorConfig()
        self._clock = clock
        self._t0 = clock()
        cfg = self.config
        seeds = np.random.default_rng([cfg.seed, 0x5E4])
        self.specimen = optics.Specimen(cfg.seed)
        self._optics = dataclasses.replace(
            optics.DEFAULT_OPTICS,
            beam_current_a=cfg.beam_current_pa * 1e-12,
            astig_rotation_rad=math.radians(cfg.stig_rotation_deg),
        )
        # Hidden truths the client must discover (autofocus) or correct (ROI relocation).
        self._focus_offset_mm = float(seeds.uniform(-1.0, 1.0)) * cfg.focus_offset_um * 1e-3
        slope_angle = float(seeds.uniform(0.0, 2.0 * math.pi))
        slope = cfg.focus_slope_um_per_mm * 1e-3
        self._focus_slope = (slope * math.cos(slope_angle), slope * math.sin(slope_angle))
        self._ideal_stig = (
            float(seeds.uniform(-1.0, 1.0)) * cfg.stig_offset_max,
            float(seeds.uniform(-1.0, 1.0)) * cfg.stig_offset_max,
        )
        drift_angle = float(seeds.uniform(0.0, 2.0 * math.pi))
        drift = cfg.drift_nm_per_s * 1e-9
        self._drift_m_per_s = (drift * math.cos(drift_angle), drift * math.sin(drift_angle))
        self._error_rng = np.random.default_rng([cfg.seed, 0xE44])
        # Instrument state.
        self.vacuum = "pumped" if cfg.start_pumped else "vented"
        self.beam_on = cfg.start_beam_on and cfg.start_pumped
        self.wd_mm = cfg.initial_wd_mm
        self.stigm_x = 0.0
        self.stigm_y = 0.0
        self.fov_um = cfg.initial_fov_um
        self._commanded = StagePosition(0.0, 0.0, cfg.initial_z_mm, 0.0, 0.0)
        self._position_error_mm = (0.0, 0.0)
        # Sample placement on the stage and magnification calibration (see reload_sample): identity at start.
        self.sample_offset_mm = (0.0, 0.0)
        self.sample_rotation_rad = 0.0
        self.magnification_error = 0.0
        self.stage_moving = False
        self.geometries = _geometries()
        self.centerings = _centerings()
        self.counters: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.action_log: list[ActionRecord] = []
        self._frames = 0
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------------------------------------- helpers
    def elapsed_s(self) -> float:
        """Seconds since the simulator started (by its clock)."""
        return self._clock() - self._t0

    async def _wait(self, seconds: float) -> None:
        delay = seconds * self.config.time_factor
        if delay > 0:
            await asyncio.sleep(delay)

    def record_action(self, capability: str, params: dict[str, Any]) -> None:
        self.counters[capability] += 1
        self.action_log.append(
            ActionRecord(len(self.action_log) + 1, capability, dict(params), self._clock())
        )

    def true_focus_wd_mm(self, x_mm: float | None = None, y_mm: float | None = None) -> float:
        """The working distance at which the specimen is in focus at a stage position (hidden truth)."""
        pos = self._commanded
        x = pos.x if x_mm is None else x_mm
        y = pos.y if y_mm is None else y_mm
        # Raising the stage (larger z) brings the surface closer to the pole piece: focus at a shorter WD.
        height = -(pos.z - self.config.initial_z_mm)
        tilt = self._focus_slope[0] * x + self._focus_slope[1] * y
        return self.config.initial_wd_mm + self._focus_offset_mm + height + tilt

    @property
    def ideal_stigmator(self) -> tuple[float, float]:
        """The stigmator values that cancel the column's astigmatism (hidden truth)."""
        return self._ideal_stig

    def drift_m(self) -> tuple[float, float]:
        """Accumulated image drift, metres."""
        t = self.elapsed_s()
        return (self._drift_m_per_s[0] * t, self._drift_m_per_s[1] * t)

    def _shift_m(self) -> tuple[float, float]:
        image_shift = self.geometries[0].values
        beam_shift = self.centerings[0].values
        return ((image_shift[0] + beam_shift[0]) * 1e-6, (image_shift[1] + beam_shift[1]) * 1e-6)

    def reload_sample(
        self,
        *,
        offset_mm: tuple[float, float] = (0.0, 0.0),
        rotation_deg: float = 0.0,
        magnification_error: float = 0.0,
    ) -> None:
        """Simulate taking the sample out and putting it back, as between two sessions (hidden truth).

        The specimen point under the beam becomes ``R(rotation)·(stage − offset)`` (plus positioning error,
        shifts and drift), the image turns by ``rotation`` with it, and the true field of view becomes the
        nominal one times ``1 + magnification_error`` (a calibration change, e.g. after a WD or HV change).
        Values replace, not add to, the current placement; all zero is the placement at start. This is an
        operator's act, not a device operation, so it is not in the action log.
        """
        if not all(math.isfinite(v) for v in (*offset_mm, rotation_deg, magnification_error)):
            raise ValueError("reload_sample needs finite values")
        if not -0.5 < magnification_error < 0.5:
            raise ValueError(f"magnification_error must be within ±0.5, got {magnification_error}")
        self.sample_offset_mm = (float(offset_mm[0]), float(offset_mm[1]))
        self.sample_rotation_rad = math.radians(rotation_deg)
        self.magnification_error = float(magnification_error)

    def specimen_point_m(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """Specimen coordinates (m) of stage position ``(x, y)`` under the current sample placement."""
        dx, dy = x_mm - self.sample_offset_mm[0], y_mm - self.sample_offset_mm[1]
        if self.sample_rotation_rad == 0.0:
            return (dx * 1e-3, dy * 1e-3)  # exact: no rounding from a zero rotation
        c, s = math.cos(self.sample_rotation_rad), math.sin(self.sample_rotation_rad)
        return ((c * dx - s * dy) * 1e-3, (s * dx + c * dy) * 1e-3)

    def imaged_center_m(self) -> tuple[float, float]:
        """The specimen point at the image centre (m): placed stage + positioning error, shifts, drift."""
        pos = self._commanded
        shift = self._shift_m()
        drift = self.drift_m()
        base = self.specimen_point_m(pos.x + self._position_error_mm[0], pos.y + self._position_error_mm[1])
        return (base[0] + shift[0] + drift[0], base[1] + shift[1] + drift[1])

    # ----------------------------------------------------------------------------------------------- queries
    def position(self) -> StagePosition:
        """The encoder reading (the commanded position; the positioning error is invisible to encoders)."""
        self.queries["position"] += 1
        return self._commanded

    def focus_params(self) -> dict[str, float]:
        """Current ``{wd_mm, stigm_x, stigm_y}``."""
        self.queries["focus"] += 1
        return {"wd_mm": self.wd_mm, "stigm_x": self.stigm_x, "stigm_y": self.stigm_y}

    def pressure_pa(self) -> float:
        """Chamber pressure implied by the vacuum state."""
        return {"pumped": 5e-4, "pumping": 10.0, "venting": 1e4, "vented": 1e5}[self.vacuum]

    def metrics(self) -> dict[str, Any]:
        """A metrics snapshot: beam, vacuum, optics, stage, counters."""
        self.queries["metrics"] += 1
        return {
            "beam": {
                "on": self.beam_on,
                "hv_kv": self.config.hv_kv,
                "current_pa": self.config.beam_current_pa,
            },
            "vacuum": {"state": self.vacuum, "pressure_pa": self.pressure_pa()},
            "optics": {
                "wd_mm": self.wd_mm,
                "stigm_x": self.stigm_x,
                "stigm_y": self.stigm_y,
                "fov_um": self.fov_um,
                "magnification": _DISPLAY_WIDTH_M / (self.fov_um * 1e-6),
                "scan_rotation_deg": self.geometries[2].values[0],
            },
            "stage": {**self._commanded.as_dict(), "moving": self.stage_moving},
            "instrument": instrument_info(self.config.stig_rotation_deg),
            "counters": dict(self.counters),
            "frames": self._frames,
            "uptime_s": self.elapsed_s(),
        }

    # ------------------------------------------------------------------------------------------- actions
    async def pump(self) -> dict[str, Any]:
        """Evacuate the chamber (no-op when already pumped)."""
        async with self._lock:
            self.record_action("Pump", {})
            if self.vacuum == "pumped":
                return {"vacuum": "pumped", "duration_s": 0.0}
            self.vacuum = "pumping"
            await self._wait(self.config.pump_duration_s)
            self.vacuum = "pumped"
            return {"vacuum": "pumped", "duration_s": self.config.pump_duration_s}

    async def vent(self) -> dict[str, Any]:
        """Vent the chamber; the HV interlock switches the beam off first if it is on."""
        async with self._lock:
            self.record_action("Vent", {})
            interlock = self.beam_on
            self.beam_on = False
            if self.vacuum == "vented":
                return {"vacuum": "vented", "duration_s": 0.0, "beam_switched_off": interlock}
            self.vacuum = "venting"
            await self._wait(self.config.vent_duration_s)
            self.vacuum = "vented"
            return {
                "vacuum": "vented",
                "duration_s": self.config.vent_duration_s,
                "beam_switched_off": interlock,
            }

    async def set_beam(self, enabled: bool) -> dict[str, Any]:
        """Switch the beam on or off; the interlock refuses beam on unless pumped."""
        async with self._lock:
            if enabled and self.vacuum != "pumped":
                raise SemphonyApiError(
                    f"HV interlock: chamber is {self.vacuum}, beam stays off", status_code=409
                )
            self.record_action("SetBeam", {"enabled": enabled})
            self.beam_on = enabled
            return {"beam_on": self.beam_on}

    async def set_view_field(self, fov_um: float) -> dict[str, Any]:
        """Set the field of view, µm."""
        if not _in(fov_um, self.config.fov_limits_um):
            raise SemphonyApiError(
                f"field of view {fov_um} µm outside {self.config.fov_limits_um}", status_code=400
            )
        async with self._lock:
            self.record_action("SetViewField", {"fov_um": fov_um})
            await self._wait(0.05)
            self.fov_um = fov_um
            return {"fov_um": self.fov_um}

    async def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> dict[str, float]:
        """Set working distance (mm) and/or stigmators; unspecified values are kept."""
        if wd_mm is not None and not _in(wd_mm, self.config.wd_limits_mm):
            raise SemphonyApiError(
                f"working distance {wd_mm} mm outside {self.config.wd_limits_mm}", status_code=400
            )
        for name, value in (("stigm_x", stigm_x), ("stigm_y", stigm_y)):
            if value is not None and abs(value) > 100.0:
                raise SemphonyApiError(f"{name} {value} outside ±100", status_code=400)
        async with self._lock:
            self.record_action("SetFocusParams", {"wd_mm": wd_mm, "stigm_x": stigm_x, "stigm_y": stigm_y})
            await self._wait(0.02)
            if wd_mm is not None:
                self.wd_mm = wd_mm
            if stigm_x is not None:
                self.stigm_x = stigm_x
            if stigm_y is not None:
                self.stigm_y = stigm_y
            return {"wd_mm": self.wd_mm, "stigm_x": self.stigm_x, "stigm_y": self.stigm_y}

    def _check_travel(self, target: StagePosition) -> None:
        cfg = self.config
        for axis, value, bounds in (
            ("x", target.x, cfg.stage_travel_x_mm),
            ("y", target.y, cfg.stage_travel_y_mm),
            ("z", target.z, cfg.stage_travel_z_mm),
            ("t", target.t, cfg.stage_travel_t_deg),
        ):
            if not math.isfinite(value) or not _in(value, bounds):
                raise SemphonyApiError(
                    f"stage {axis}={value} outside hardware travel {bounds}", status_code=400
                )

    async def _move(self, target: StagePosition, capability: str, params: dict[str, Any]) -> StagePosition:
        self._check_travel(target)
        async with self._lock:
            self.record_action(capability, params)
            start = self._commanded
            distance = math.dist((start.x, start.y, start.z), (target.x, target.y, target.z))
            self.stage_moving = True
            try:
                await self._wait(distance / self.config.stage_speed_mm_s + self.config.stage_settle_s)
            finally:
                self.stage_moving = False
            sigma_mm = self.config.positioning_error_um * 1e-3
            if distance > 0:
                # Each real move lands a little off; the encoders report the commanded position.
                err = self._error_rng.normal(0.0, sigma_mm, 2) if sigma_mm > 0 else np.zeros(2)
                self._position_error_mm = (float(err[0]), float(err[1]))
            self._commanded = target
            return target

    async def move_to(
        self, x: float, y: float, z: float | None = None, r: float | None = None, t: float | None = None
    ) -> StagePosition:
        """Absolute move (mm, degrees); unspecified axes keep their value."""
        cur = self._commanded
        target = StagePosition(
            x, y, cur.z if z is None else z, (cur.r if r is None else r) % 360.0, cur.t if t is None else t
        )
        return await self._move(target, "StageMoveTo", {"x": x, "y": y, "z": z, "r": r, "t": t})

    async def move_delta(
        self,
        dx: float = 0.0,
        dy: float = 0.0,
        dz: float | None = None,
        dr: float | None = None,
        dt: float | None = None,
    ) -> StagePosition:
        """Relative move (mm, degrees)."""
        cur = self._commanded
        target = StagePosition(
            cur.x + dx, cur.y + dy, cur.z + (dz or 0.0), (cur.r + (dr or 0.0)) % 360.0, cur.t + (dt or 0.0)
        )
        params = {"dx": dx, "dy": dy, "dz": dz, "dr": dr, "dt": dt}
        return await self._move(target, "StageMoveDelta", params)

    # ------------------------------------------------------------------------------ geometries, centerings
    def _table(self, kind: str) -> list[GeometryEntry]:
        return self.geometries if kind == "geometry" else self.centerings

    def table_list(self, kind: str) -> dict[str, Any]:
        """``{index: {name, count, unit, limits}}`` for ``kind`` 'geometry' or 'centering'."""
        self.queries[f"{kind}_list"] += 1
        return {str(i): entry.describe(i) for i, entry in enumerate(self._table(kind))}

    def table_resolve(self, kind: str, name_or_index: str | int) -> int:
        """Index of the entry a fuzzy name or index designates (404-style error otherwise)."""
        table = self._table(kind)
        try:
            return resolve_entry([entry.name for entry in table], name_or_index)
        except LookupError as exc:
            raise SemphonyApiError(f"unknown {kind}: {exc}", status_code=404) from exc

    def table_get(self, kind: str, name_or_index: str | int) -> dict[str, Any]:
        """Current value(s) of one entry."""
        self.queries[f"{kind}_get"] += 1
        index = self.table_resolve(kind, name_or_index)
        entry = self._table(kind)[index]
        values = {"x": entry.values[0]} if entry.count == 1 else {"x": entry.values[0], "y": entry.values[1]}
        return {**entry.describe(index), **values}

    async def table_set(
        self, kind: str, name_or_index: str | int, x: float, y: float | None
    ) -> dict[str, Any]:
        """Set one entry's value(s) within its limits."""
        index = self.table_resolve(kind, name_or_index)
        entry = self._table(kind)[index]
        for value in (x, y):
            if value is not None and (not math.isfinite(value) or abs(value) > entry.limit):
                raise SemphonyApiError(
                    f"{entry.name} value {value} {entry.unit} outside ±{entry.limit}", status_code=400
                )
        async with self._lock:
            self.record_action(f"{kind.capitalize()}Set", {"index": index, "x": x, "y": y})
            entry.values[0] = x
            if y is not None and entry.count == 2:
                entry.values[1] = y
        return self.table_get(kind, index)

    async def geometry_reset(self) -> dict[str, Any]:
        """Reset every geometry to zero."""
        async with self._lock:
            self.record_action("GeometryReset", {})
            for entry in self.geometries:
                entry.values = [0.0, 0.0]
        return {"reset": list(range(len(self.geometries)))}

    # -------------------------------------------------------------------------------------------- imaging
    async def acquire(
        self,
        *,
        width: int,
        height: int,
        dwell_us: float,
        fov_um: float | None = None,
        scan_rotation_deg: float | None = None,
    ) -> Frame:
        """Scan one frame. Needs the beam on (a real column gives a black frame; we refuse instead)."""
        if not self.beam_on:
            raise SemphonyApiError("beam is off: cannot acquire", status_code=409)
        if fov_um is not None and not _in(fov_um, self.config.fov_limits_um):
            raise SemphonyApiError(
                f"field of view {fov_um} µm outside {self.config.fov_limits_um}", status_code=400
            )
        async with self._lock:
            params = {"width": width, "height": height, "dwell_us": dwell_us, "fov_um": fov_um}
            self.record_action("Acquire", {**params, "scan_rotation_deg": scan_rotation_deg})
            if fov_um is not None:
                self.fov_um = fov_um
            if scan_rotation_deg is not None:
                self.geometries[2].values[0] = scan_rotation_deg
            frame_time_s = dwell_us * 1e-6 * width * height * 1.1 + 0.08
            await self._wait(frame_time_s)
            self._frames += 1
            pos = self._commanded
            # The image turns with the scan, against the stage rotation, and with the sample's placement.
            rotation_rad = math.radians(self.geometries[2].values[0] - pos.r) + self.sample_rotation_rad
            defocus_m = (self.wd_mm - self.true_focus_wd_mm()) * 1e-3
            stig = (self.stigm_x - self._ideal_stig[0], self.stigm_y - self._ideal_stig[1])
            rng = np.random.default_rng([self.config.seed, 0xF4A, self._frames])
            image = optics.render_image(
                self.specimen,
                center_m=self.imaged_center_m(),
                fov_m=self.fov_um * 1e-6 * (1.0 + self.magnification_error),
                scan_rotation_rad=rotation_rad,
                shape=(height, width),
                defocus_m=defocus_m,
                stig=stig,
                dwell_s=dwell_us * 1e-6,
                rng=rng,
                optics=self._optics,
            )
            metadata = {
                "frame": self._frames,
                "width": width,
                "height": height,
                "dwell_us": dwell_us,
                "fov_um": self.fov_um,
                "pixel_size_nm": self.fov_um * 1000.0 / width,
                "scan_rotation_deg": self.geometries[2].values[0],
                "wd_mm": self.wd_mm,
                "stigm_x": self.stigm_x,
                "stigm_y": self.stigm_y,
                "hv_kv": self.config.hv_kv,
                "beam_current_pa": self.config.beam_current_pa,
                "stage": pos.as_dict(),
                "frame_time_s": frame_time_s,
            }
            return Frame(np.asarray(image, dtype=np.float32), metadata)
