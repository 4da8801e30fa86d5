"""Operator and test endpoints under ``/testbed/`` (read-only views, fault injection, housekeeping on demand).

These are the testbed's own API, documented in the package docstring of :mod:`testbed.backend`. Fault
injection never applies to them, so a test can always inspect state and clear faults.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from testbed.backend.bodies import parse_one
from testbed.backend.entity_store import KINDS
from testbed.backend.errors import NotFound
from testbed.backend.housekeeping import sweep_once
from testbed.backend.routing import Router
from testbed.backend.state import BackendState, in_thread


class FailRequest(BaseModel):
    """``POST /testbed/faults/fail``: answer the next ``count`` requests with ``status``."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0)
    status: Literal[429, 500, 502, 503, 504] = 503
    retry_after: float | None = Field(default=1.0, ge=0)
    path_prefix: str | None = None


class LatencyRequest(BaseModel):
    """``POST /testbed/faults/latency``: delay every request by ``seconds`` (0 removes the delay)."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0)
    path_prefix: str | None = None


def build_testbed_router(state: BackendState) -> APIRouter:
    """The ``/testbed/`` routes bound to ``state``."""
    router = Router(prefix="/testbed", tags=["testbed"])

    @router.get("/counts")
    async def counts(acquisition_uuid: str | None = None) -> dict[str, int]:
        return await in_thread(state.entities.counts, acquisition_uuid)

    @router.get("/acquisitions/{acquisition_uuid}/entities")
    async def acquisition_entities(acquisition_uuid: str) -> dict[str, Any]:
        return await in_thread(state.entities.acquisition_tree, acquisition_uuid)

    @router.get("/entities/{kind}/{uuid}")
    async def entity(kind: str, uuid: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise NotFound(f"unknown entity kind {kind!r}; one of {', '.join(KINDS)}")
        found = await in_thread(state.entities.get, kind, uuid)
        if found is None:
            raise NotFound(f"{kind} {uuid} not found")
        return found

    @router.get("/sessions")
    async def sessions() -> list[dict[str, Any]]:
        return await in_thread(state.agents.list_sessions, active_only=False)

    @router.get("/connections")
    async def connections(session_id: str | None = None) -> list[dict[str, Any]]:
        return await in_thread(state.agents.list_connections, session_id=session_id)

    @router.get("/streams")
    async def streams(session_id: str | None = None) -> dict[str, int]:
        return {"open": state.hub.open_count(session_id)}

    @router.get("/instructions")
    async def instructions(session_id: str | None = None) -> list[dict[str, Any]]:
        return await in_thread(state.agents.instruction_history, session_id=session_id)

    @router.get("/instructions/{instruction_id}")
    async def instruction(instruction_id: str) -> dict[str, Any]:
        found = await in_thread(state.agents.get_instruction, instruction_id)
        if found is None:
            raise NotFound(f"instruction {instruction_id} not found")
        return found

    @router.get("/logs")
    async def logs(
        agent_id: str | None = None, session_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return await in_thread(state.agents.logs, agent_id=agent_id, session_id=session_id, limit=limit)

    @router.get("/heartbeats")
    async def heartbeats(session_id: str | None = None) -> list[dict[str, Any]]:
        return await in_thread(state.agents.heartbeats, session_id=session_id)

    @router.post("/sweep")
    async def sweep() -> dict[str, Any]:
        return await sweep_once(state)

    @router.post("/reset")
    async def reset() -> dict[str, int]:
        return await state.reset()

    @router.get("/faults")
    async def faults() -> dict[str, Any]:
        return state.faults.snapshot()

    @router.post("/faults/fail")
    async def fail(request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), FailRequest, "strict", naive_datetimes=False)
        state.faults.fail_next(
            body.count, status=body.status, retry_after=body.retry_after, path_prefix=body.path_prefix
        )
        return state.faults.snapshot()

    @router.post("/faults/latency")
    async def latency(request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), LatencyRequest, "strict", naive_datetimes=False)
        state.faults.add_latency(body.seconds, path_prefix=body.path_prefix)
        return state.faults.snapshot()

    @router.post("/faults/drop-streams")
    async def drop_streams(session_id: str | None = None) -> dict[str, int]:
        if session_id is not None:
            return {"dropped": state.hub.end_session(session_id, "dropped_by_fault")}
        return {"dropped": state.hub.end_all("dropped_by_fault")}

    @router.delete("/faults")
    async def clear_faults() -> dict[str, Any]:
        state.faults.clear()
        return state.faults.snapshot()

    return router


__all__ = ["FailRequest", "LatencyRequest", "build_testbed_router"]
