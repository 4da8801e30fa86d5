"""The device layer's exceptions (names and bases as in the Semphony SDK).

Foreign exceptions (httpx, numpy, OS errors from the simulator) are translated into these at the boundary, so
callers handle exactly two failure kinds: the device or server could not do it (:class:`SemphonyApiError`,
with :class:`SemphonyUnsupportedError` for a call the device cannot express at all), or a guardrail refused it
before anything moved (:class:`SemphonyGuardrailException`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AthenaError", "SemphonyApiError", "SemphonyGuardrailException", "SemphonyUnsupportedError"]


class SemphonyApiError(RuntimeError):
    """The control server could not be reached, answered non-2xx or non-JSON, or the device failed.

    ``status_code`` is the HTTP status (or the equivalent the in-process simulator assigns: 400 bad request,
    404 unknown, 409 conflict/stale, 504 device timeout); ``None`` when no response was received.
    """

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.message} (HTTP {self.status_code})"


class SemphonyUnsupportedError(SemphonyApiError):
    """The attached device cannot express this call at all (HTTP 501); nothing was attempted.

    A backend raises it instead of approximating a call it has no control for (OpenFIBSEM has no tilt
    correction, no operator prompt), and for SDK features whose results the device's images cannot support
    (image-based autofocus on a simulator whose frames do not depend on focus). It is a
    :class:`SemphonyApiError`, so scripts written against the SDK reference handle it as one; the agent
    acknowledges it ``declined`` with ``reason``.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, status_code=501, body={"unsupported": True, "reason": reason or message})
        self.reason = reason or message


class SemphonyGuardrailException(Exception):
    """A guardrail rule refused a capability call before it reached the device.

    ``guardrail_type`` names the rule (see :mod:`agent.devices.guardrails`); ``details`` is a
    JSON-serialisable dict explaining the violation (requested value, limit, current state).
    """

    def __init__(self, guardrail_type: str, details: dict[str, Any]) -> None:
        super().__init__(f"guardrail {guardrail_type!r} violated: {details}")
        self.guardrail_type = guardrail_type
        self.details = details


class AthenaError(RuntimeError):
    """The Athena decision service could not be reached or answered with an error."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message if status_code is None else f"{message} (HTTP {status_code})")
        self.status_code = status_code
