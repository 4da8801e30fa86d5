"""Guardrails: safety rules checked before a capability reaches the instrument.

The same :func:`check_capability` runs twice: in the SDK before a request leaves the agent, and again in the
control server (the in-process simulator core or the testbed's Semphony-compatible server) against the
device's true state. A violation raises :class:`~agent.devices.errors.SemphonyGuardrailException` with
one of the ``GUARDRAIL_*`` types below and a JSON-serialisable ``details`` dict; nothing moves.

Rules (each can be switched off in :class:`ImagingGuardrails`):

* ``vacuum_required``: the beam may be switched on only when the chamber is pumped.
* ``beam_on_during_vent``: the chamber may be vented only with the beam off.
* ``stage_soft_limits``: absolute and relative stage moves must end inside the soft limits.
* ``relative_move_limit``: a relative XY move may be at most a fraction of the current field of view
  (OpenFIBSEM's ``check_shift_within_tolerance`` uses 0.25 by default and 0.5 for alignment).
* ``working_distance_range``: a working distance outside the range is refused.
* ``fov_range``: a field of view (set or acquired) outside the range is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.devices.capabilities import Capability
from agent.devices.errors import SemphonyGuardrailException

__all__ = [
    "GUARDRAIL_BEAM_ON_DURING_VENT",
    "GUARDRAIL_FOV_RANGE",
    "GUARDRAIL_RELATIVE_MOVE_LIMIT",
    "GUARDRAIL_STAGE_SOFT_LIMITS",
    "GUARDRAIL_VACUUM_REQUIRED",
    "GUARDRAIL_WORKING_DISTANCE_RANGE",
    "DeviceState",
    "ImagingGuardrails",
    "StageSoftLimits",
    "check_capability",
    "needs_state",
]

GUARDRAIL_VACUUM_REQUIRED = "vacuum_required"
GUARDRAIL_BEAM_ON_DURING_VENT = "beam_on_during_vent"
GUARDRAIL_STAGE_SOFT_LIMITS = "stage_soft_limits"
GUARDRAIL_RELATIVE_MOVE_LIMIT = "relative_move_limit"
GUARDRAIL_WORKING_DISTANCE_RANGE = "working_distance_range"
GUARDRAIL_FOV_RANGE = "fov_range"

Range = tuple[float, float]


def _check_range(value: Range | None) -> Range | None:
    if value is not None and not (
        math.isfinite(value[0]) and math.isfinite(value[1]) and value[0] <= value[1]
    ):
        raise ValueError(f"range must be finite with min <= max, got {value}")
    return value


class StageSoftLimits(BaseModel):
    """Soft limits of the stage, inside its hardware travel. ``None`` leaves an axis unchecked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x_mm: Range | None = Field((-40.0, 40.0), description="X travel allowed, mm.")
    y_mm: Range | None = Field((-40.0, 40.0), description="Y travel allowed, mm.")
    z_mm: Range | None = Field((0.0, 45.0), description="Z travel allowed, mm.")
    r_deg: Range | None = Field(
        None, description="Rotation allowed, degrees (continuous rotation: unchecked)."
    )
    t_deg: Range | None = Field((-10.0, 60.0), description="Tilt allowed, degrees.")

    _ranges = field_validator("x_mm", "y_mm", "z_mm", "r_deg", "t_deg")(_check_range)


class ImagingGuardrails(BaseModel):
    """Which guardrails a session enforces, with their limits (defaults suit a TESCAN-class SEM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vacuum_for_beam: bool = Field(True, description="Refuse beam on unless the chamber is pumped.")
    beam_off_for_vent: bool = Field(True, description="Refuse venting while the beam is on.")
    stage_limits: StageSoftLimits | None = Field(
        default_factory=StageSoftLimits, description="Stage soft limits; None disables the check."
    )
    max_relative_move_fov_fraction: float | None = Field(
        0.5, gt=0, description="Largest relative XY move as a fraction of the current FOV; None disables."
    )
    wd_range_mm: Range | None = Field((1.0, 30.0), description="Allowed working distance, mm.")
    fov_range_um: Range | None = Field((0.5, 2000.0), description="Allowed field of view, µm.")

    _ranges = field_validator("wd_range_mm", "fov_range_um")(_check_range)


class DeviceState(BaseModel):
    """The part of the instrument's state the guardrails need (parsed from a ``GetMetrics`` snapshot)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    vacuum: str = Field(description="'pumped', 'pumping', 'venting' or 'vented'.")
    beam_on: bool
    fov_um: float
    x_mm: float
    y_mm: float
    z_mm: float
    r_deg: float
    t_deg: float

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> DeviceState:
        """Build from a ``GetMetrics`` result (``beam``, ``vacuum``, ``optics``, ``stage`` sections)."""
        try:
            stage = metrics["stage"]
            return cls(
                vacuum=str(metrics["vacuum"]["state"]),
                beam_on=bool(metrics["beam"]["on"]),
                fov_um=float(metrics["optics"]["fov_um"]),
                x_mm=float(stage["x"]),
                y_mm=float(stage["y"]),
                z_mm=float(stage["z"]),
                r_deg=float(stage["r"]),
                t_deg=float(stage["t"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"metrics snapshot lacks a field the guardrails need: {exc!r}") from exc


def needs_state(guardrails: ImagingGuardrails, capability_id: str, payload: Mapping[str, Any]) -> bool:
    """Whether checking this call needs a fresh :class:`DeviceState` (saves a metrics query otherwise)."""
    if capability_id == Capability.SET_BEAM:
        return guardrails.vacuum_for_beam and bool(payload.get("enabled"))
    if capability_id == Capability.VENT:
        return guardrails.beam_off_for_vent
    if capability_id == Capability.STAGE_MOVE_DELTA:
        return guardrails.stage_limits is not None or guardrails.max_relative_move_fov_fraction is not None
    return False


def _number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        # Not a number: the payload validation (server side) refuses it with a 400; no rule applies here.
        return None
    return float(value)


def _check_limits(limits: StageSoftLimits, target: Mapping[str, float | None], *, move: str) -> None:
    axes = {"x": limits.x_mm, "y": limits.y_mm, "z": limits.z_mm, "r": limits.r_deg, "t": limits.t_deg}
    for axis, value in target.items():
        bounds = axes[axis]
        if value is None or bounds is None:
            continue
        if not bounds[0] <= value <= bounds[1]:
            raise SemphonyGuardrailException(
                GUARDRAIL_STAGE_SOFT_LIMITS,
                {"axis": axis, "target": value, "min": bounds[0], "max": bounds[1], "move": move},
            )


def _check_in_range(value: float | None, bounds: Range | None, guardrail_type: str, parameter: str) -> None:
    if value is None or bounds is None:
        return
    if not bounds[0] <= value <= bounds[1]:
        raise SemphonyGuardrailException(
            guardrail_type, {"parameter": parameter, "value": value, "min": bounds[0], "max": bounds[1]}
        )


def check_capability(
    guardrails: ImagingGuardrails | None,
    capability_id: str,
    payload: Mapping[str, Any],
    state: DeviceState | None,
) -> None:
    """Raise :class:`SemphonyGuardrailException` if ``capability_id`` with ``payload`` breaks a rule.

    ``state`` must be given when :func:`needs_state` says so; a missing state for a state-dependent rule is a
    programming error (``ValueError``), never a silent pass.
    """
    if guardrails is None:
        return
    if needs_state(guardrails, capability_id, payload) and state is None:
        raise ValueError(f"guardrail check of {capability_id} needs the device state")
    if capability_id == Capability.SET_BEAM:
        if (
            guardrails.vacuum_for_beam
            and payload.get("enabled")
            and state is not None
            and state.vacuum != "pumped"
        ):
            raise SemphonyGuardrailException(
                GUARDRAIL_VACUUM_REQUIRED,
                {"vacuum": state.vacuum, "required": "pumped", "requested": "beam on"},
            )
    elif capability_id == Capability.VENT:
        if guardrails.beam_off_for_vent and state is not None and state.beam_on:
            raise SemphonyGuardrailException(
                GUARDRAIL_BEAM_ON_DURING_VENT, {"beam_on": True, "required": "beam off", "requested": "vent"}
            )
    elif capability_id == Capability.STAGE_MOVE_TO:
        if guardrails.stage_limits is not None:
            target = {axis: _number(payload, axis) for axis in ("x", "y", "z", "r", "t")}
            _check_limits(guardrails.stage_limits, target, move="absolute")
    elif capability_id == Capability.STAGE_MOVE_DELTA:
        _check_delta(guardrails, payload, state)
    elif capability_id == Capability.SET_FOCUS_PARAMS:
        _check_in_range(
            _number(payload, "wd_mm"), guardrails.wd_range_mm, GUARDRAIL_WORKING_DISTANCE_RANGE, "wd_mm"
        )
    elif capability_id in (Capability.SET_VIEW_FIELD, Capability.ACQUIRE):
        _check_in_range(_number(payload, "fov_um"), guardrails.fov_range_um, GUARDRAIL_FOV_RANGE, "fov_um")


def _check_delta(
    guardrails: ImagingGuardrails, payload: Mapping[str, Any], state: DeviceState | None
) -> None:
    dx = _number(payload, "dx") or 0.0
    dy = _number(payload, "dy") or 0.0
    deltas = {axis: _number(payload, f"d{axis}") for axis in ("z", "r", "t")}
    if state is None:
        return
    fraction = guardrails.max_relative_move_fov_fraction
    if fraction is not None:
        distance_um = math.hypot(dx, dy) * 1000.0
        limit_um = fraction * state.fov_um
        if distance_um > limit_um:
            raise SemphonyGuardrailException(
                GUARDRAIL_RELATIVE_MOVE_LIMIT,
                {
                    "distance_um": distance_um,
                    "limit_um": limit_um,
                    "fov_um": state.fov_um,
                    "max_fov_fraction": fraction,
                },
            )
    if guardrails.stage_limits is not None:
        current = {"z": state.z_mm, "r": state.r_deg, "t": state.t_deg}
        target: dict[str, float | None] = {"x": state.x_mm + dx, "y": state.y_mm + dy}
        for axis, delta in deltas.items():
            target[axis] = None if delta is None else current[axis] + delta
        _check_limits(guardrails.stage_limits, target, move="relative")
