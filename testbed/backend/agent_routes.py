"""Agent-facing endpoints (SSE stream, ack, heartbeat, logs) and SmartEM's debug endpoints for sessions and
instructions (smartem-reference.md sections 4-9 and 12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from testbed.backend.agent_models import (
    AgentInstructionAcknowledgement,
    AgentLogBatchRequest,
    InstructionCreateRequest,
    SessionCreateRequest,
)
from testbed.backend.agent_rows import PRIORITY_RANK, NewInstruction
from testbed.backend.auth import SCOPE_KEY
from testbed.backend.bodies import parse_one
from testbed.backend.db import iso, utcnow
from testbed.backend.errors import Conflict, Rejected, ServerCrash
from testbed.backend.routing import Router
from testbed.backend.state import BackendState, in_thread
from testbed.backend.streams import instruction_stream

_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def build_agent_router(state: BackendState) -> APIRouter:
    """Agent and debug routes bound to ``state``."""
    router = Router(tags=["agents"])
    compat = state.options.compat

    # -- SSE stream, ack, heartbeat, logs --------------------------------------------------------------------

    @router.get("/agent/{agent_id}/session/{session_id}/instructions/stream")
    async def stream_instructions(agent_id: str, session_id: str, request: Request) -> StreamingResponse:
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        auth = state.options.auth
        # Set by the auth middleware: when the token that opened this stream stops being valid.
        token_expires_at: float | None = getattr(request.state, SCOPE_KEY, None)
        return StreamingResponse(
            instruction_stream(
                state,
                agent_id,
                session_id,
                request.headers.get("last-event-id"),
                client,
                end_at=token_expires_at if auth is not None and auth.end_streams_on_expiry else None,
            ),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    @router.post("/agent/{agent_id}/session/{session_id}/instructions/{instruction_id}/ack")
    async def acknowledge(agent_id: str, session_id: str, instruction_id: str, request: Request) -> Any:
        # Unknown fields are a 422 in both modes: SmartEM's acknowledgement model forbids them too.
        body = parse_one(
            await request.body(),
            AgentInstructionAcknowledgement,
            compat,
            forbid_unknown=True,
            naive_datetimes=False,
        )
        try:
            return await in_thread(
                state.agents.acknowledge, agent_id, session_id, instruction_id, body.model_dump(mode="json")
            )
        except Rejected:
            if state.strict:
                raise
            # SmartEM wraps every ack error (404, 403, 400 alike) into a 500.
            return JSONResponse({"detail": "Internal server error"}, status_code=500)

    @router.post("/agent/{agent_id}/session/{session_id}/heartbeat")
    async def heartbeat(agent_id: str, session_id: str) -> dict[str, Any]:
        return await in_thread(state.agents.heartbeat, agent_id, session_id)

    @router.post("/agent/{agent_id}/session/{session_id}/logs")
    async def ship_logs(agent_id: str, session_id: str, request: Request) -> dict[str, int]:
        body = parse_one(await request.body(), AgentLogBatchRequest, compat)
        limit = state.options.max_logs_per_request
        if len(body.logs) > limit and state.strict:
            # Refuse rather than silently drop: the client should split the batch.
            raise RequestValidationError(
                [
                    {
                        "type": "too_long",
                        "loc": ["body", "logs"],
                        "msg": f"at most {limit} records",
                        "input": None,
                    }
                ]
            )
        records = [r.model_dump(mode="json") for r in body.logs[:limit]]
        stored = await in_thread(state.agents.store_logs, agent_id, session_id, records)
        return {"stored": stored}

    # -- debug: sessions -------------------------------------------------------------------------------------

    async def create_session(request: Request, *, managed: bool) -> dict[str, Any]:
        body = parse_one(await request.body() or b"{}", SessionCreateRequest, compat, naive_datetimes=False)
        try:
            return await in_thread(
                state.agents.create_session,
                agent_id=body.agent_id,
                session_id=None if managed else body.session_id,
                acquisition_uuid=body.acquisition_uuid,
                name=body.name,
                description=body.description,
                experimental_parameters=body.experimental_parameters,
            )
        except Conflict as exc:
            if state.strict:
                raise
            # SmartEM inserts the row and meets its unique index on session_id: an unhandled IntegrityError.
            raise ServerCrash(f"IntegrityError: {exc.detail}") from exc

    @router.post("/debug/sessions/create")
    async def debug_create_session(request: Request) -> dict[str, Any]:
        session = await create_session(request, managed=False)
        return {
            "session_id": session["session_id"],
            "agent_id": session["agent_id"],
            "status": "created",
            "created_at": session["created_at"],
        }

    @router.post("/debug/sessions/create-managed")
    async def debug_create_managed_session(request: Request) -> dict[str, Any]:
        session = await create_session(request, managed=True)
        return {
            "session_id": session["session_id"],
            "status": "created",
            "created_via": "connection_manager",
            "timestamp": session["created_at"],
        }

    @router.delete("/debug/sessions/{session_id}/close")
    async def debug_close_session(session_id: str) -> Any:
        try:
            await in_thread(state.agents.close_session, session_id)
        except Rejected:
            if state.strict:
                raise
            return JSONResponse({"detail": "Failed to close session"}, status_code=500)
        if state.strict:
            # The session can no longer stream; end its open streams now rather than leave them dangling.
            state.hub.end_session(session_id, "session_closed")
        return {
            "session_id": session_id,
            "status": "closed",
            "closed_via": "connection_manager",
            "timestamp": iso(utcnow()),
        }

    @router.get("/debug/sessions")
    async def debug_list_sessions() -> dict[str, Any]:
        sessions = await in_thread(state.agents.list_sessions, active_only=True)
        return {"active_sessions": sessions, "total_count": len(sessions)}

    @router.get("/debug/agent-connections")
    async def debug_connections() -> dict[str, Any]:
        conns = await in_thread(state.agents.list_connections, active_only=True)
        return {"active_connections": conns, "total_count": len(conns)}

    @router.get("/debug/connection-stats")
    async def debug_connection_stats() -> dict[str, Any]:
        conns = await in_thread(state.agents.list_connections, active_only=True)
        sessions = await in_thread(state.agents.list_sessions, active_only=True)
        return {
            "active_connections": len(conns),
            "active_sessions": len(sessions),
            "open_streams": state.hub.open_count(),
        }

    # -- debug: instructions ---------------------------------------------------------------------------------

    @router.post("/debug/session/{session_id}/create-instruction")
    async def debug_create_instruction(session_id: str, request: Request) -> dict[str, Any]:
        body = parse_one(
            await request.body() or b"{}", InstructionCreateRequest, compat, naive_datetimes=False
        )
        if state.strict and body.priority not in PRIORITY_RANK:
            raise RequestValidationError(
                [
                    {
                        "type": "literal_error",
                        "loc": ["body", "priority"],
                        "msg": f"priority must be one of {', '.join(PRIORITY_RANK)}",
                        "input": body.priority,
                    }
                ]
            )
        # SmartEM: a falsy expires_in_minutes (null or 0) means "never expires".
        expires_at = (
            utcnow() + timedelta(minutes=body.expires_in_minutes) if body.expires_in_minutes else None
        )
        created = await in_thread(
            state.agents.create_instruction,
            NewInstruction(
                session_id=session_id,
                instruction_type=body.instruction_type,
                payload=body.payload,
                priority=body.priority,
                sequence_number=body.sequence_number,
                expires_at=expires_at,
                metadata=body.metadata,
                instruction_id=body.instruction_id,
            ),
        )
        # The counterpart of SmartEM's NOTIFY: wake this session's open streams.
        state.hub.notify(session_id)
        return {
            "instruction_id": created["instruction_id"],
            "status": "created",
            "created_at": created["created_at"],
        }

    @router.get("/debug/session/{session_id}/instructions")
    async def debug_session_instructions(session_id: str) -> Any:
        items = await in_thread(state.agents.instruction_history, session_id=session_id)
        if items and not state.strict:
            # SmartEM serialises the ORM class's `metadata` attribute here and fails (reference section 17).
            raise ServerCrash("cannot serialise instruction metadata")
        stats: dict[str, int] = {}
        for item in items:
            for ack in item["acknowledgements"]:
                if ack["outcome"] == "accepted":
                    stats[ack["status"]] = stats.get(ack["status"], 0) + 1
        listed = [
            {
                **{
                    k: item[k]
                    for k in ("instruction_id", "agent_id", "instruction_type", "payload", "sequence_number")
                },
                **{k: item[k] for k in ("priority", "status", "created_at", "sent_at", "acknowledged_at")},
                "expires_at": item["expires_at"],
                "metadata": item["metadata"],
                "acknowledgements_count": sum(
                    1 for a in item["acknowledgements"] if a["outcome"] == "accepted"
                ),
            }
            for item in reversed(items)
        ]
        return {
            "session_id": session_id,
            "instructions": listed,
            "total_instructions": len(listed),
            "acknowledgement_statistics": stats,
        }

    return router


__all__ = ["build_agent_router"]
