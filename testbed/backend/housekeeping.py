"""The backend's periodic housekeeping, SmartEM's connection manager in small (smartem-reference.md sections
6, 8).

Each pass: expiry retry of overdue instructions, closing of stale connections, marking idle sessions inactive.
In strict mode the sessions whose instructions went back to ``pending`` are woken at once, so an open stream
redelivers them promptly; in smartem mode they wait for the next notification or reconnect, as on SmartEM.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from testbed.backend.state import BackendState, in_thread

log = logging.getLogger(__name__)


async def sweep_once(state: BackendState) -> dict[str, Any]:
    """Run one housekeeping pass and report what changed."""
    opts = state.options
    renewed = await in_thread(state.agents.sweep_expired, extension=timedelta(seconds=opts.expiry_extension))
    if state.strict:
        for session_id in renewed:
            state.hub.notify(session_id)
    closed = await in_thread(
        state.agents.sweep_connections,
        stale_after=timedelta(seconds=opts.stale_connection_after),
        live=state.hub.live_connection_ids(),
    )
    inactive = await in_thread(
        state.agents.sweep_sessions, inactive_after=timedelta(seconds=opts.session_inactive_after)
    )
    return {
        "sessions_with_reset_instructions": sorted(renewed),
        "closed_connections": closed,
        "inactive_sessions": inactive,
    }


async def housekeeping_loop(state: BackendState) -> None:
    """Sweep every ``expiry_sweep_interval`` seconds until cancelled; a failing pass is logged and retried."""
    while True:
        await asyncio.sleep(state.options.expiry_sweep_interval)
        try:
            await sweep_once(state)
        except Exception:
            # Keep sweeping: one failed pass (e.g. the database closing during shutdown) must not end expiry.
            log.exception("testbed backend housekeeping pass failed")


__all__ = ["housekeeping_loop", "sweep_once"]
