"""The SSE instruction stream: ``GET /agent/{agent_id}/session/{session_id}/instructions/stream``.

Sequence (smartem-reference.md section 5): validate the session (else one ``error`` event
``session_validation_failed`` and the end of the stream) -> insert the connection row -> ``connection`` event
-> drain deliverable instructions -> loop: wait until woken (a new instruction for this session, an expiry
reset in strict mode, a fault, shutdown) or a timer fires; on wake drain again; after ``heartbeat_interval``
without a wake send a ``heartbeat`` event; every ``ping_interval`` send a ``: ping`` comment.

With authentication on, a stream opened with an expiring token ends when the token expires (close reason
``token_expired``), so the agent must reconnect with a fresh one.

Strict-mode improvements (design.md): ``retry:`` hint with the connection event, ``id:`` (the delivery id) on
each instruction event, ``Last-Event-ID`` resume, re-sending of sent-but-unacknowledged instructions on
reconnect. smartem mode sends no ``id:`` and re-sends nothing; its connection rows also stay ``active`` after
the client goes away (the real backend does not notice until its stale sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from testbed.backend.db import iso, utcnow
from testbed.backend.state import BackendState, StreamHandle, in_thread

SEP = "\r\n"  # sse-starlette's default line separator


def format_event(
    event: str, data: dict[str, Any], *, event_id: int | None = None, retry_ms: int | None = None
) -> str:
    """One SSE message block (``data`` is compact JSON, hence a single line)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    return SEP.join(lines) + SEP + SEP


PING = f": ping{SEP}{SEP}"


def parse_last_event_id(header: str | None, newest: int) -> int | None:
    """A usable ``Last-Event-ID`` (an integer this database issued), else ``None`` (re-send everything)."""
    if header is None:
        return None
    text = header.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= newest else None


async def instruction_stream(
    state: BackendState,
    agent_id: str,
    session_id: str,
    last_event_id: str | None,
    client: str,
    *,
    end_at: float | None = None,
) -> AsyncIterator[str]:
    """Generate the stream's text. Cancelled by Starlette when the client disconnects.

    ``end_at`` (Unix time): end the stream then, with close reason ``token_expired`` (the token that opened
    it expired); ``None``: no limit."""
    opts = state.options
    agents = state.agents
    problem = await in_thread(agents.validate_stream, agent_id, session_id)
    if problem is not None:
        yield format_event(
            "error", {"type": "error", "error": "session_validation_failed", "message": problem}
        )
        return
    connection_id = await in_thread(
        agents.open_connection,
        agent_id,
        session_id,
        {"connected_at": iso(utcnow()), "client": client, "last_event_id": last_event_id},
    )
    handle = StreamHandle(session_id, connection_id)
    state.hub.register(handle)
    end_reason = "client_disconnect"
    try:
        yield format_event(
            "connection",
            {
                "type": "connection",
                "agent_id": agent_id,
                "session_id": session_id,
                "connection_id": connection_id,
                "status": "connected",
            },
            retry_ms=opts.retry_ms if state.strict else None,
        )
        after: int | None = None
        if state.strict:
            after = parse_last_event_id(last_event_id, await in_thread(agents.max_event_id))
        for chunk in await _drain(state, handle, resend_unacked=state.strict, after_event_id=after):
            yield chunk
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + opts.ping_interval
        next_heartbeat = loop.time() + opts.heartbeat_interval
        # On the loop's monotonic clock, so a wall-clock step cannot stretch or cut the token's life here.
        token_deadline = math.inf if end_at is None else loop.time() + (end_at - time.time())
        while True:
            if loop.time() >= token_deadline:
                end_reason = "token_expired"
                return
            timeout = max(0.0, min(next_ping, next_heartbeat, token_deadline) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.wake.wait(), timeout=timeout)
            # Read the flag rather than trust the outcome of wait_for: a notification that lands while the
            # timeout is being delivered sets the event yet still ends in TimeoutError, and clearing it
            # unread would strand that instruction until the next wake.
            woken = handle.wake.is_set()
            handle.wake.clear()
            if handle.end_reason is not None:
                end_reason = handle.end_reason
                return
            now = loop.time()
            if woken:
                for chunk in await _drain(state, handle, resend_unacked=False, after_event_id=None):
                    yield chunk
                # SmartEM restarts its 30 s wait after every notification.
                next_heartbeat = now + opts.heartbeat_interval
            if now >= next_ping:
                yield PING
                next_ping = now + opts.ping_interval
            if now >= next_heartbeat:
                await in_thread(agents.touch_connection, connection_id)
                yield format_event(
                    "heartbeat",
                    {"type": "heartbeat", "timestamp": iso(utcnow()), "connection_id": connection_id},
                )
                next_heartbeat = now + opts.heartbeat_interval
    finally:
        state.hub.unregister(handle)
        # smartem mode leaves the row `active` until the stale sweep, as the real backend does; a synchronous
        # call because an `await` here would be cancelled along with the stream.
        if state.strict:
            agents.close_connection(connection_id, end_reason)


async def _drain(
    state: BackendState, handle: StreamHandle, *, resend_unacked: bool, after_event_id: int | None
) -> list[str]:
    claimed = await in_thread(
        state.agents.claim_for_stream,
        handle.session_id,
        handle.connection_id,
        resend_unacked=resend_unacked,
        after_event_id=after_event_id,
    )
    if claimed:
        await in_thread(state.agents.touch_session, handle.session_id)
    return [
        format_event("instruction", data, event_id=event_id if state.strict else None)
        for event_id, data in claimed
    ]


__all__ = ["PING", "format_event", "instruction_stream", "parse_last_event_id"]
