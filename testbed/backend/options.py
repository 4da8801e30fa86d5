"""Configuration of the testbed backend: compatibility mode and every timing knob.

Every interval is configurable so that tests exercise heartbeats, pings, expiry and stale connections in
milliseconds rather than SmartEM's real 15 s / 30 s / 5 min values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Compat = Literal["strict", "smartem"]
"""``strict``: stricter than SmartEM, with the compatible improvements of design.md. ``smartem``: quirk for
quirk the observed behaviour of the running SmartEM backend (smartem-reference.md, final table)."""


class BackendOptions(BaseModel):
    """Behaviour of one backend instance. Defaults are SmartEM's real values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compat: Compat = "strict"
    heartbeat_interval: float = Field(
        default=30.0, gt=0, description="SSE `heartbeat` event after this idle time, s"
    )
    ping_interval: float = Field(default=15.0, gt=0, description="`: ping` comment period on open streams, s")
    retry_ms: int = Field(
        default=1000, ge=0, description="`retry:` hint sent on connect (strict mode only), ms"
    )
    expiry_sweep_interval: float = Field(
        default=30.0, gt=0, description="period of the housekeeping sweep (expiry, stale connections), s"
    )
    expiry_extension: float = Field(
        default=300.0, gt=0, description="new expiry window given to an instruction reset to pending, s"
    )
    max_retries: int = Field(
        default=3, ge=1, description="expiry resets before an instruction becomes `expired`"
    )
    stale_connection_after: float = Field(
        default=120.0, gt=0, description="a connection without heartbeat for this long is closed, s"
    )
    session_inactive_after: float = Field(
        default=3600.0, gt=0, description="a session without activity for this long becomes `inactive`, s"
    )
    max_logs_per_request: int = Field(default=500, ge=1, description="log records stored per request")
    max_batch: int = Field(default=1000, ge=1, description="largest grid-square / micrograph batch")


__all__ = ["BackendOptions", "Compat"]
