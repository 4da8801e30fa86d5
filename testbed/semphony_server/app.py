"""A Semphony-compatible control server over the SEM simulator (FastAPI).

The REST paths are those :class:`agent.devices.http_backend.SemphonyHttpBackend` uses; all of them need
``Authorization: Bearer <api key>``. The control logic (sessions, guardrails, dispatch) is
:class:`agent.devices.simulator.control.SimulatedControlServer`, shared with the in-process backend.

Test and operator extras (same auth): ``POST /testbed/faults`` (``{"acquire_timeouts": n,
"stale_latest_positions": n}`` adds injected faults), ``GET /testbed/actions`` (device-action counts and log),
``GET /testbed/truth`` (the hidden in-focus WD and ideal stigmators), ``GET /api/prompts`` and
``POST /api/prompts/{id}/continue`` (the operator's Continue button). ``GET /healthz`` needs no auth.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException
from agent.devices.simulator.control import SimulatedControlServer

__all__ = ["create_app"]


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
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code or 500)

    @app.exception_handler(SemphonyGuardrailException)
    async def _guardrail(request: Request, exc: SemphonyGuardrailException) -> JSONResponse:
        detail = {"guardrail_type": exc.guardrail_type, "details": exc.details}
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    api = [Depends(authorised)]

    @app.post("/api/runs", dependencies=api)
    async def create_run(body: _RunBody) -> dict[str, Any]:
        return core.create_run(body.name, resume=body.resume, metadata=body.metadata, system=body.system)

    @app.get("/api/runs/{run_id}", dependencies=api)
    async def get_run(run_id: int) -> dict[str, Any]:
        return core.get_run(run_id)

    @app.post("/api/runs/{run_id}/sessions", dependencies=api)
    async def create_session(run_id: int) -> dict[str, Any]:
        return core.create_session(run_id)

    @app.get("/api/runs/{run_id}/sessions/{session_id}", dependencies=api)
    async def get_session(run_id: int, session_id: int) -> dict[str, Any]:
        return core.get_session(run_id, session_id)

    @app.post("/api/runs/{run_id}/sessions/{session_id}/close", dependencies=api)
    async def close_session(run_id: int, session_id: int) -> dict[str, Any]:
        return core.close_session(run_id, session_id)

    @app.put("/api/runs/{run_id}/sessions/{session_id}/guardrails", dependencies=api)
    async def set_guardrails(run_id: int, session_id: int, body: _GuardrailsBody) -> dict[str, Any]:
        return core.set_guardrails(run_id, session_id, body.guardrails)

    @app.post("/api/runs/{run_id}/sessions/{session_id}/devices", dependencies=api)
    async def attach(run_id: int, session_id: int, body: _AttachBody) -> dict[str, Any]:
        return core.attach(
            run_id,
            session_id,
            device_slug=body.device_slug,
            device_id=body.device_id,
            kind=body.kind,
            force_close=body.force_close,
        )

    @app.post("/api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}", dependencies=api)
    async def command(
        run_id: int,
        session_id: int,
        capability_id: str,
        payload: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> dict[str, Any]:
        return await core.invoke(run_id, session_id, capability_id, payload)

    @app.get("/api/images/{image_id}", dependencies=api)
    async def image(image_id: str) -> Response:
        stored = core.image(image_id)
        return Response(stored.png, media_type="image/png", headers={"X-Image-Id": stored.image_id})

    @app.get("/api/prompts", dependencies=api)
    async def prompts() -> list[dict[str, Any]]:
        return core.pending_prompts()

    @app.post("/api/prompts/{prompt_id}/continue", dependencies=api)
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
