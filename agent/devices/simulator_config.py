"""Configuration of the SEM simulator (every default is a realistic magnitude; see sem-reference.md §9–10).

It lives outside the simulator package: the settings and the factory hold it, and only the factory builds the
simulator from it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SimulatorConfig"]


class SimulatorConfig(BaseModel):
    """Parameters of the simulated SEM, its specimen and its deformation stage.

    ``time_factor`` scales every simulated duration (pumping, venting, stage travel, frame time): 1.0 is real
    time, 0.01 makes a 150 s pump-down take 1.5 s, 0 makes everything instant (tests).
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(
        0, description="Seeds the specimen, the true focus and stigmator offsets, noise and errors."
    )
    time_factor: float = Field(1.0, ge=0.0, description="Multiplier of every simulated duration.")
    imaging_slug: str = Field("sem-001", description="Slug of the simulated imaging device.")
    deformation_slug: str = Field("tensile-001", description="Slug of the simulated deformation stage.")
    pump_duration_s: float = Field(
        150.0, ge=0.0, description="Vented -> pumped, seconds (before time_factor)."
    )
    vent_duration_s: float = Field(
        45.0, ge=0.0, description="Pumped -> vented, seconds (before time_factor)."
    )
    start_pumped: bool = Field(True, description="Chamber pumped at start.")
    start_beam_on: bool = Field(True, description="Beam on at start (requires start_pumped).")
    hv_kv: float = Field(15.0, gt=0.0, description="Accelerating voltage, kV.")
    beam_current_pa: float = Field(
        100.0, gt=0.0, description="Probe current, pA (sets the shot-noise level)."
    )
    initial_wd_mm: float = Field(5.0, gt=0.0, description="Working distance at start, mm.")
    initial_fov_um: float = Field(100.0, gt=0.0, description="Field of view at start, µm.")
    fov_limits_um: tuple[float, float] = Field((0.1, 5000.0), description="Hardware field-of-view range, µm.")
    wd_limits_mm: tuple[float, float] = Field((0.5, 50.0), description="Hardware working-distance range, mm.")
    stage_travel_x_mm: tuple[float, float] = Field((-50.0, 50.0), description="Hardware X travel, mm.")
    stage_travel_y_mm: tuple[float, float] = Field((-50.0, 50.0), description="Hardware Y travel, mm.")
    stage_travel_z_mm: tuple[float, float] = Field((0.0, 50.0), description="Hardware Z travel, mm.")
    stage_travel_t_deg: tuple[float, float] = Field(
        (-30.0, 90.0), description="Hardware tilt range, degrees."
    )
    initial_z_mm: float = Field(
        10.0, description="Stage Z at start, mm (the height at which focus ~ initial WD)."
    )
    stage_speed_mm_s: float = Field(5.0, gt=0.0, description="Stage travel speed, mm/s.")
    stage_settle_s: float = Field(0.2, ge=0.0, description="Settling time after each move, s.")
    positioning_error_um: float = Field(0.5, ge=0.0, description="1-sigma XY positioning error per move, µm.")
    drift_nm_per_s: float = Field(
        0.5, ge=0.0, description="Slow thermal image drift, nm/s (seeded direction)."
    )
    focus_offset_um: float = Field(
        20.0, ge=0.0, description="Largest |true focus - initial WD| at start, µm."
    )
    focus_slope_um_per_mm: float = Field(0.5, ge=0.0, description="Specimen tilt: focus change per mm of XY.")
    stig_offset_max: float = Field(
        1.0, ge=0.0, description="Largest |ideal stigmator value| per axis (a.u.)."
    )
    # The shipped learned autofocus was trained on this simulator with the stigmator axes aligned (0°); any other
    # angle is a column it has never seen, which is what `em-agent autofocus validate` must be able to detect.
    stig_rotation_deg: float = Field(
        0.0,
        ge=-180.0,
        le=180.0,
        description="Rotation between the stigmator axes and the scan axes, degrees (0 = the column the "
        "learned autofocus was trained on; anything else emulates an instrument it has never seen).",
    )
    latest_position_max_age_s: float = Field(
        30.0,
        gt=0.0,
        description="A stored stage position older than this is stale (409 from get_latest_pos).",
    )
    human_auto_continue: bool = Field(
        True, description="await_human continues at once (unattended demo); False waits for an operator."
    )
    human_timeout_s: float = Field(3600.0, gt=0.0, description="Longest wait for an operator, s.")
    max_stored_images: int = Field(64, ge=1, description="Images kept for download (oldest dropped first).")
    deformation_max_um: float = Field(5000.0, gt=0.0, description="Deformation stage travel, µm.")
    deformation_stiffness_n_per_um: float = Field(0.02, gt=0.0, description="Simulated specimen stiffness.")
    deformation_speed_um_s: float = Field(50.0, gt=0.0, description="Crosshead speed, µm/s.")
