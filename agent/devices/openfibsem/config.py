"""Settings of the OpenFIBSEM backend (``[device.openfibsem]``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OpenFibsemConfig"]


class OpenFibsemConfig(BaseModel):
    """Which microscope OpenFIBSEM connects to and how long each kind of call may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    configuration: Path | None = Field(
        None,
        description="OpenFIBSEM microscope-configuration YAML; None uses OpenFIBSEM's default, whose "
        "manufacturer is 'Demo' (its DemoMicroscope, no hardware).",
    )
    manufacturer: str | None = Field(
        None, description="Overrides the configuration's info.manufacturer: Demo, ThermoFisher or Tescan."
    )
    ip_address: str | None = Field(None, description="Overrides the configuration's info.ip_address.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Microscope server port; None: 7520 (Thermo, Demo), 8300 (TESCAN)."
    )
    connect_timeout_s: float = Field(60.0, gt=0, description="Limit for connecting to the microscope.")
    call_timeout_s: float = Field(
        120.0, gt=0, description="Limit for one call (stage move, acquisition, optics), s."
    )
    vacuum_timeout_s: float = Field(1800.0, gt=0, description="Limit for pump and vent, s.")
    stop_timeout_s: float = Field(
        5.0, gt=0, description="How long closing waits to disconnect before leaving a hung call behind, s."
    )
