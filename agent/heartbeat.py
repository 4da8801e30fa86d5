"""The agent heartbeat as a daemon service whose period can change while the agent runs.

:class:`~backend_client.heartbeat.AgentHeartbeatSender` beats at a fixed period and refuses 0.
``agent.config.update`` may set ``heartbeat_interval_s`` to any value in 0..3600 s while the daemon runs, 0
meaning no heartbeat, so the daemon owns the sender through :class:`AdjustableHeartbeat`: 0 stops it, a positive
period (re)starts it. :func:`stream_heartbeat` is the one wiring of a heartbeat to the instruction stream, used
by ``em-agent run`` and by the stand-alone instruction runner alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from backend_client.heartbeat import AgentHeartbeatSender, ConnectedStream, stream_heartbeat_sender

if TYPE_CHECKING:
    from backend_client.async_client import AsyncSmartEMAPIClient

__all__ = ["AdjustableHeartbeat", "stream_heartbeat"]


class AdjustableHeartbeat:
    """Starts, stops and re-times one heartbeat sender; a daemon :class:`~agent.daemon.Service`.

    ``make_sender(interval)`` builds the sender the first time a positive period is needed; it is kept (with its
    counters) across later changes.
    """

    def __init__(self, make_sender: Callable[[float], AgentHeartbeatSender], interval: float) -> None:
        if interval < 0:
            raise ValueError(f"heartbeat interval must be 0 (none) or positive, got {interval}")
        self._make_sender = make_sender
        self._interval = interval
        self._sender: AgentHeartbeatSender | None = None
        self._started = False

    @property
    def interval(self) -> float:
        """The period in effect, s; 0 when no heartbeat is sent."""
        return self._interval

    @property
    def sender(self) -> AgentHeartbeatSender | None:
        """The sender, once a positive period has been in effect (None before)."""
        return self._sender

    @property
    def running(self) -> bool:
        """True while heartbeats are being sent."""
        return self._sender is not None and self._sender.running

    async def start(self) -> None:
        """Start beating, unless the period is 0."""
        self._started = True
        await self._restart()

    async def stop(self) -> None:
        """Stop beating (idempotent)."""
        self._started = False
        if self._sender is not None:
            await self._sender.stop()

    async def set_interval(self, interval: float) -> None:
        """Change the period: 0 stops the beats; a positive one restarts them, so that the new period counts
        from now rather than after the rest of the old one."""
        if interval < 0:
            raise ValueError(f"heartbeat interval must be 0 (none) or positive, got {interval}")
        self._interval = interval
        if self._started:
            await self._restart()

    async def _restart(self) -> None:
        if self._sender is not None:
            await self._sender.stop()
        if self._interval <= 0:
            return
        if self._sender is None:
            self._sender = self._make_sender(self._interval)
        self._sender.interval = self._interval
        await self._sender.start()


def stream_heartbeat(
    api: AsyncSmartEMAPIClient, stream: ConnectedStream, interval: float
) -> AdjustableHeartbeat:
    """The heartbeat of ``stream``'s agent session, posted through ``api`` while ``stream`` is connected.

    ``interval`` 0 composes it idle, so that a later ``set_interval`` can turn it on.
    """

    def make_sender(period: float) -> AgentHeartbeatSender:
        return stream_heartbeat_sender(api, stream, interval=period)

    return AdjustableHeartbeat(make_sender, interval)
