"""A Semphony-compatible control server over the SEM simulator (FastAPI).

The REST routes, bodies and error encodings are those of :mod:`agent.devices.semphony_protocol`, which
:class:`agent.devices.http_backend.SemphonyHttpBackend` also reads (so the two cannot drift apart); all need
``Authorization: Bearer <api key>``. The control logic (sessions, guardrails, dispatch) is
:class:`agent.devices.simulator.control.SimulatedControlServer`, shared with the in-process backend.

Test and operator extras (same auth): ``POST /testbed/faults`` (``{"acquire_timeouts": n,
"stale_latest_positions": n}`` adds injected faults), ``GET /testbed/actions`` (device-action counts and log),
``GET /testbed/truth`` (the hidden in-focus WD and ideal stigmators), ``GET /api/prompts`` and
``POST /api/prompts/{id}/continue`` (the operator's Continue button). ``GET /healthz`` needs no auth.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException, SemphonyUnsupportedError
from agent.devices.semphony_protocol import (
    GUARDRAIL_STATUS,
    ROUTES,
    UNSUPPORTED_STATUS,
    Route,
    guardrail_error_detail,
    unsupported_error_detail,
)
from agent.devices.simulator.control import SimulatedControlServer

__all__ = ["create_app"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    resume: bool = True
    metadata: dict[str, Any] | None = None
    system: str | None = None


class _AttachBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_slug: str | None = None
    device_id: int | None = None
    kind: str | None = None
    force_close: bool = False


class _GuardrailsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    guardrails: dict[str, Any] | None


class _FaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    acquire_timeouts: int = Field(0, ge=0)
    stale_latest_positions: int = Field(0, ge=0)


def _route(app: FastAPI, route: Route, dependencies: list[Any]) -> Callable[[_F], _F]:
    """Register a handler for ``route`` (method and path both from the protocol module)."""
    return app.api_route(route.template, methods=[route.method], dependencies=dependencies)


def create_app(core: SimulatedControlServer, *, api_key: str) -> FastAPI:
    """The FastAPI app serving ``core``; requests must carry ``Bearer <api_key>``."""
    if not api_key:
        raise ValueError("api_key must not be empty")
    app = FastAPI(title="Semphony-compatible control server (testbed)", docs_url=None, redoc_url=None)

    def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or invalid API key")

    @app.exception_handler(SemphonyApiError)
    async def _api_error(request: Request, exc: SemphonyApiError) -> JSONResponse:
        if isinstance(exc, SemphonyUnsupportedError):
            return JSONResponse({"detail": unsupported_error_detail(exc)}, status_code=UNSUPPORTED_STATUS)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code or 500)

    @app.exception_handler(SemphonyGuardrailException)
    async def _guardrail(request: Request, exc: SemphonyGuardrailException) -> JSONResponse:
        return JSONResponse({"detail": guardrail_error_detail(exc)}, status_code=GUARDRAIL_STATUS)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    api = [Depends(authorised)]

    @_route(app, ROUTES.create_run, api)
    async def create_run(body: _RunBody) -> dict[str, Any]:
        return core.create_run(body.name, resume=body.resume, metadata=body.metadata, system=body.system)

    @_route(app, ROUTES.get_run, api)
    async def get_run(run_id: int) -> dict[str, Any]:
        return core.get_run(run_id)

    @_route(app, ROUTES.create_session, api)
    async def create_session(run_id: int) -> dict[str, Any]:
        return core.create_session(run_id)

    @_route(app, ROUTES.get_session, api)
    async def get_session(run_id: int, session_id: int) -> dict[str, Any]:
        return core.get_session(run_id, session_id)

    @_route(app, ROUTES.close_session, api)
    async def close_session(run_id: int, session_id: int) -> dict[str, Any]:
        return core.close_session(run_id, session_id)

    @_route(app, ROUTES.set_guardrails, api)
    async def set_guardrails(run_id: int, session_id: int, body: _GuardrailsBody) -> dict[str, Any]:
        return core.set_guardrails(run_id, session_id, body.guardrails)

    @_route(app, ROUTES.attach_device, api)
    async def attach(run_id: int, session_id: int, body: _AttachBody) -> dict[str, Any]:
        return core.attach(
            run_id,
            session_id,
            device_slug=body.device_slug,
            device_id=body.device_id,
            kind=body.kind,
            force_close=body.force_close,
        )

    @_route(app, ROUTES.invoke, api)
    async def command(
        run_id: int,
        session_id: int,
        capability_id: str,
        payload: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> dict[str, Any]:
        return await core.invoke(run_id, session_id, capability_id, payload)

    @_route(app, ROUTES.download_image, api)
    async def image(image_id: str) -> Response:
        stored = core.image(image_id)
        return Response(stored.png, media_type="image/png", headers={"X-Image-Id": stored.image_id})

    @_route(app, ROUTES.list_prompts, api)
    async def prompts() -> list[dict[str, Any]]:
        return core.pending_prompts()

    @_route(app, ROUTES.continue_prompt, api)
    async def continue_prompt(prompt_id: int) -> dict[str, Any]:
        return core.continue_prompt(prompt_id)

    @app.post("/testbed/faults", dependencies=api)
    async def faults(body: _FaultsBody) -> dict[str, int]:
        core.acquire_timeouts += body.acquire_timeouts
        core.stale_latest_positions += body.stale_latest_positions
        return {
            "acquire_timeouts": core.acquire_timeouts,
            "stale_latest_positions": core.stale_latest_positions,
        }

    @app.get("/testbed/actions", dependencies=api)
    async def actions() -> dict[str, Any]:
        log = [
            {"seq": a.seq, "capability": a.capability, "params": a.params, "monotonic_s": a.monotonic_s}
            for a in core.sem.action_log
        ]
        return {"counts": core.action_counts(), "log": log}

    @app.get("/testbed/truth", dependencies=api)
    async def truth() -> dict[str, Any]:
        sem = core.sem
        return {
            "true_focus_wd_mm": sem.true_focus_wd_mm(),
            "ideal_stigmator": list(sem.ideal_stigmator),
            "imaged_center_m": list(sem.imaged_center_m()),
            "drift_m": list(sem.drift_m()),
        }

    return app
