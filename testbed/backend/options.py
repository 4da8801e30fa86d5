"""Configuration of the testbed backend: compatibility mode and every timing knob.

Every interval is configurable so that tests exercise heartbeats, pings, expiry and stale connections in
milliseconds rather than SmartEM's real 15 s / 30 s / 5 min values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Compat = Literal["strict", "smartem"]
"""``strict``: stricter than SmartEM, with the compatible improvements of design.md. ``smartem``: quirk for
quirk the observed behaviour of the running SmartEM backend (smartem-reference.md, final table)."""


class AuthOptions(BaseModel):
    """Bearer-token authentication (off unless given to :class:`BackendOptions`). See
    :mod:`testbed.backend.auth`.

    At least one way in is required: ``static_tokens`` and/or a ``client_id``/``client_secret`` pair for the
    OAuth2 client-credentials endpoint ``POST /auth/token``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    static_tokens: tuple[str, ...] = Field(
        default=(), repr=False, description="bearer tokens accepted as they are; they never expire"
    )
    client_id: str | None = Field(default=None, min_length=1, description="client of `POST /auth/token`")
    client_secret: str | None = Field(
        default=None, min_length=1, repr=False, description="that client's secret"
    )
    token_lifetime_s: float = Field(
        default=300.0, gt=0, description="lifetime of issued tokens, s (Keycloak's default: 5 min)"
    )
    leeway_s: float = Field(
        default=0.0, ge=0, description="grace after expiry before a token is refused, s (SmartEM allows 60)"
    )
    end_streams_on_expiry: bool = Field(
        default=True, description="end an open SSE stream when its token expires (as a gateway would)"
    )

    @model_validator(mode="after")
    def _check(self) -> AuthOptions:
        # A token travels in an HTTP header: printable ASCII without spaces.
        if any(not t or not t.isascii() or not t.isprintable() or " " in t for t in self.static_tokens):
            raise ValueError("static tokens must be non-empty printable ASCII without spaces")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together")
        if not self.static_tokens and self.client_id is None:
            raise ValueError("auth needs static_tokens or a client_id/client_secret pair")
        return self


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
    auth: AuthOptions | None = Field(
        default=None, description="bearer-token authentication; `None` (default): an open backend"
    )


__all__ = ["AuthOptions", "BackendOptions", "Compat"]
