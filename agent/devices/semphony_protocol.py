"""The Semphony control-server HTTP protocol in one module: what the SDK reference states, and what we assume.

The Semphony Python SDK reference documents the client API, not the server. It fixes only a few wire facts;
everything else our client (:mod:`agent.devices.http_backend`) and our stand-in server
(``testbed/semphony_server``) agree on is an assumption made here. Both ends read routes, bodies, status codes
and capability ids from this module, so adapting to a real control server is a change to this file alone.

From the reference (marked ``REFERENCE`` below):

* authentication is ``Authorization: Bearer <api key>``; the base URL's trailing slash is stripped;
* ``invoke_capability`` posts to ``/api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}``;
* a non-2xx answer, an unreachable server or a non-JSON answer (a login redirect) is ``SemphonyApiError``;
  an acquisition answered 504 is retried up to twice; ``get_pos`` fails on 502/504; ``get_latest_pos`` fails
  on 409 when the stored position is stale;
* a guardrail refusal surfaces as ``SemphonyGuardrailException`` with ``guardrail_type`` and ``details``;
* one capability id: ``SetViewField``.

Assumed (marked ``ASSUMED``): every other path and HTTP method (runs, sessions, guardrails, device attachment,
image download, operator prompts), every request body, the attach answer, how a guardrail refusal is encoded
(422 with ``{"detail": {"guardrail_type", "details"}}``), 501 for a call the device cannot express, every
capability id but ``SetViewField``, and that a command's JSON payload is the SDK method's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal
from urllib.parse import quote

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException, SemphonyUnsupportedError

__all__ = [
    "ASSUMED",
    "GUARDRAIL_STATUS",
    "REFERENCE",
    "ROUTES",
    "UNSUPPORTED_STATUS",
    "Capability",
    "Route",
    "Routes",
    "attach_body",
    "error_from_response",
    "guardrail_error_detail",
    "guardrails_body",
    "run_body",
    "unsupported_error_detail",
]

Source = Literal["reference", "assumed"]
REFERENCE: Final[Source] = "reference"
ASSUMED: Final[Source] = "assumed"

#: ASSUMED: the status of a guardrail refusal (its body: :func:`guardrail_error_detail`).
GUARDRAIL_STATUS: Final = 422
#: ASSUMED: the status of a call the attached device cannot express (its body: :func:`unsupported_error_detail`).
UNSUPPORTED_STATUS: Final = 501


@dataclass(frozen=True)
class Route:
    """One endpoint: HTTP method, path template (``{name}`` placeholders, as FastAPI writes them), origin."""

    method: str
    template: str
    source: Source

    def path(self, **params: object) -> str:
        """The template with each placeholder filled in, URL-quoted (``/`` included)."""
        return self.template.format(**{k: quote(str(v), safe="") for k, v in params.items()})


@dataclass(frozen=True)
class Routes:
    """Every endpoint the SDK client calls and the testbed server serves."""

    create_run: Route = Route("POST", "/api/runs", ASSUMED)
    get_run: Route = Route("GET", "/api/runs/{run_id}", ASSUMED)
    create_session: Route = Route("POST", "/api/runs/{run_id}/sessions", ASSUMED)
    get_session: Route = Route("GET", "/api/runs/{run_id}/sessions/{session_id}", ASSUMED)
    close_session: Route = Route("POST", "/api/runs/{run_id}/sessions/{session_id}/close", ASSUMED)
    set_guardrails: Route = Route("PUT", "/api/runs/{run_id}/sessions/{session_id}/guardrails", ASSUMED)
    attach_device: Route = Route("POST", "/api/runs/{run_id}/sessions/{session_id}/devices", ASSUMED)
    invoke: Route = Route(
        "POST", "/api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}", REFERENCE
    )
    download_image: Route = Route("GET", "/api/images/{image_id}", ASSUMED)
    list_prompts: Route = Route("GET", "/api/prompts", ASSUMED)
    continue_prompt: Route = Route("POST", "/api/prompts/{prompt_id}/continue", ASSUMED)


ROUTES: Final = Routes()


class Capability(StrEnum):
    """Capability ids: the last segment of the ``invoke`` route.

    REFERENCE: ``SetViewField`` only. ASSUMED: all others, named in the same PascalCase convention.
    """

    ACQUIRE = "Acquire"
    SET_VIEW_FIELD = "SetViewField"
    GET_FOCUS_PARAMS = "GetFocusParams"
    SET_FOCUS_PARAMS = "SetFocusParams"
    SET_BEAM = "SetBeam"
    GET_METRICS = "GetMetrics"
    VENT = "Vent"
    PUMP = "Pump"
    STAGE_GET_POSITION = "StageGetPosition"
    STAGE_GET_LATEST_POSITION = "StageGetLatestPosition"
    STAGE_MOVE_TO = "StageMoveTo"
    STAGE_MOVE_DELTA = "StageMoveDelta"
    GEOMETRY_LIST = "GeometryList"
    GEOMETRY_GET = "GeometryGet"
    GEOMETRY_SET = "GeometrySet"
    GEOMETRY_RESET = "GeometryReset"
    CENTERING_LIST = "CenteringList"
    CENTERING_GET = "CenteringGet"
    CENTERING_SET = "CenteringSet"
    AWAIT_HUMAN = "AwaitHuman"
    # Deformation stage (tensile stage / load frame).
    DEFORMATION_STATUS = "DeformationStatus"
    DEFORMATION_MOVE = "DeformationMove"


def run_body(
    name: str, *, resume: bool, metadata: dict[str, Any] | None, system: str | None
) -> dict[str, Any]:
    """ASSUMED: the body of ``create_run`` (the SDK's ``run()`` arguments, which the reference names)."""
    return {"name": name, "resume": resume, "metadata": metadata, "system": system}


def guardrails_body(guardrails: dict[str, Any] | None) -> dict[str, Any]:
    """ASSUMED: the body of ``set_guardrails`` (``None`` removes them)."""
    return {"guardrails": guardrails}


def attach_body(
    *, device_slug: str | None, device_id: int | None, kind: str | None, force_close: bool
) -> dict[str, Any]:
    """ASSUMED: the body of ``attach_device``. The answer is ``{device_id, device_slug, kind, session_id}``
    plus, optionally, ``unsupported``: SDK features (``autofocus``, ``find_roi``) the device declines, with
    the reason."""
    return {"device_slug": device_slug, "device_id": device_id, "kind": kind, "force_close": force_close}


def guardrail_error_detail(exc: SemphonyGuardrailException) -> dict[str, Any]:
    """ASSUMED: the ``detail`` of a :data:`GUARDRAIL_STATUS` answer."""
    return {"guardrail_type": exc.guardrail_type, "details": exc.details}


def unsupported_error_detail(exc: SemphonyUnsupportedError) -> dict[str, Any]:
    """ASSUMED: the ``detail`` of an :data:`UNSUPPORTED_STATUS` answer."""
    return {"unsupported": True, "message": exc.message, "reason": exc.reason}


def error_from_response(
    label: str, status_code: int, detail: Any, reason_phrase: str
) -> SemphonyApiError | SemphonyGuardrailException:
    """The exception a non-2xx answer stands for (``detail``: the JSON body's ``detail``, or text)."""
    if status_code == GUARDRAIL_STATUS and isinstance(detail, Mapping) and "guardrail_type" in detail:
        return SemphonyGuardrailException(str(detail["guardrail_type"]), dict(detail.get("details") or {}))
    if status_code == UNSUPPORTED_STATUS:
        if isinstance(detail, Mapping):
            message = str(detail.get("message") or reason_phrase)
            reason = detail.get("reason")
            return SemphonyUnsupportedError(
                f"{label}: {message}", reason=None if reason is None else str(reason)
            )
        return SemphonyUnsupportedError(f"{label}: {detail or reason_phrase}")
    message = detail if isinstance(detail, str) and detail else reason_phrase
    return SemphonyApiError(f"{label}: {message}", status_code=status_code, body=detail)
