"""The FastAPI application factory of the testbed backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from testbed.backend.agent_routes import build_agent_router
from testbed.backend.auth import AuthMiddleware, TokenIssuer, build_auth_router
from testbed.backend.db import iso, utcnow
from testbed.backend.entity_routes import build_entity_router
from testbed.backend.errors import Rejected, ServerCrash
from testbed.backend.faults import FaultInjector, FaultMiddleware
from testbed.backend.housekeeping import housekeeping_loop
from testbed.backend.options import BackendOptions, Compat
from testbed.backend.state import BackendState
from testbed.backend.testbed_routes import build_testbed_router

VERSION = "0.1.0"


def create_app(
    db_path: str | Path,
    *,
    compat: Compat = "strict",
    faults: FaultInjector | None = None,
    tokens: TokenIssuer | None = None,
    **options: Any,
) -> FastAPI:
    """Build the backend app over the SQLite file ``db_path`` (created if missing, reused if present).

    ``options`` are the remaining fields of :class:`~testbed.backend.options.BackendOptions`
    (``heartbeat_interval``, ``ping_interval``, ``retry_ms``, ``expiry_sweep_interval``, ``expiry_extension``,
    ``max_retries``, ``stale_connection_after``, ``session_inactive_after``, ``auth``, ...); an unknown name
    raises ``pydantic.ValidationError``. ``faults`` lets a caller (``BackendServer``) keep fault state across
    restarts; ``tokens`` likewise keeps the token signing key (used only with ``auth``; default: a
    :class:`~testbed.backend.auth.TokenIssuer` built from the auth options). The database opens when the app's
    lifespan starts and closes when it ends.
    """
    opts = BackendOptions(compat=compat, **options)
    if opts.auth is None:
        tokens = None  # an open backend: nothing to issue or check
    elif tokens is None:
        tokens = TokenIssuer(opts.auth)
    elif tokens.options != opts.auth:
        raise ValueError("tokens was built for other auth options than this app's")
    state = BackendState(db_path=Path(db_path), options=opts, faults=faults or FaultInjector())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.open()
        state.loop = asyncio.get_running_loop()
        sweeper = asyncio.create_task(housekeeping_loop(state), name="testbed-backend-housekeeping")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            state.hub.end_all("shutdown")
            state.close()
            state.loop = None

    app = FastAPI(
        title="em-agent testbed backend",
        version=VERSION,
        description=f"SmartEM-compatible backend ({opts.compat} mode)",
        lifespan=lifespan,
    )
    app.state.backend = state

    @app.exception_handler(Rejected)
    async def rejected(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Rejected)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(ServerCrash)
    async def crash(_: Request, exc: Exception) -> Response:
        # What an unhandled exception looks like on SmartEM: a bare text 500, then the connection is closed.
        return PlainTextResponse("Internal Server Error", status_code=500, headers={"Connection": "close"})

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {
            "status": "ok",
            "service": "em-agent testbed backend",
            "version": VERSION,
            "timestamp": iso(utcnow()),
            "configuration": {
                "compat": opts.compat,
                "heartbeat_interval": opts.heartbeat_interval,
                "ping_interval": opts.ping_interval,
                "auth": "bearer" if opts.auth is not None else "none",
                "extensions": ["sse-id", "last-event-id", "resend-unacked", "micrograph-batch"]
                if opts.compat == "strict"
                else [],
            },
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(build_entity_router(state))
    app.include_router(build_agent_router(state))
    app.include_router(build_testbed_router(state))
    if tokens is not None:
        app.include_router(build_auth_router(tokens))
        # Added before the fault middleware, so it sits inside it: an injected 503 answers before auth runs,
        # as a failing proxy in front of the backend would.
        app.add_middleware(AuthMiddleware, issuer=tokens)
    app.add_middleware(FaultMiddleware, injector=state.faults)
    return app


__all__ = ["create_app"]
