"""The agent heartbeat: ``POST /agent/{agent_id}/session/{session_id}/heartbeat`` while the stream is up.

SmartEM closes an agent connection that has sent no heartbeat for about two minutes, and answers 404 to a
heartbeat while it sees no active SSE connection. So a heartbeat is tied to one instruction stream: it is
sent only while that stream is connected. :func:`stream_heartbeat_sender` is the one place that ties a
sender to a stream; both ``SSEAgentClient(heartbeat_interval=...)`` and the daemon build their sender with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.errors import BackendError, NotFoundError

__all__ = ["AgentHeartbeatSender", "ConnectedStream", "stream_heartbeat_sender"]


class AgentHeartbeatSender:
    """Posts ``.../heartbeat`` every ``interval`` seconds while ``is_connected()`` is true.

    SmartEM answers 404 when it sees no active SSE connection (e.g. just after a server restart); that is
    tolerated and counted, not treated as a failure. Other errors are counted and kept in ``last_error``; the
    next beat is the retry.
    """

    def __init__(
        self,
        client: AsyncSmartEMAPIClient,
        agent_id: str,
        session_id: str,
        *,
        interval: float = 60.0,
        is_connected: Callable[[], bool] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self._client = client
        self.agent_id = agent_id
        self.session_id = session_id
        self.interval = interval
        self._is_connected = is_connected or (lambda: True)
        self._log = logger or logging.getLogger("backend_client.heartbeat")
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.not_connected = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True while the periodic task runs."""
        return self._task is not None and not self._task.done()

    async def beat(self) -> bool:
        """Send one heartbeat; True if the backend accepted it, False on 404 or an error."""
        try:
            await self._client.send_heartbeat(self.agent_id, self.session_id)
        except NotFoundError:
            self.not_connected += 1
            self._log.debug("heartbeat: backend sees no active connection (404)")
            return False
        except BackendError as exc:
            self.failures += 1
            self.last_error = str(exc)
            self._log.warning("heartbeat failed", extra={"event": "sse.heartbeat_failed", "error": str(exc)})
            return False
        self.sent += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._is_connected():
                await self.beat()

    async def start(self) -> None:
        """Start the periodic task (raises if already running)."""
        if self.running:
            raise RuntimeError("AgentHeartbeatSender already running")
        self._task = asyncio.create_task(self._run(), name="em-agent-heartbeat")

    async def stop(self) -> None:
        """Stop the periodic task (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Not suppress(CancelledError): that would also swallow a cancellation of the caller.
            await asyncio.wait({task})


class ConnectedStream(Protocol):
    """What a heartbeat needs to know of an instruction stream (``SSEAgentClient`` is one)."""

    @property
    def agent_id(self) -> str:
        """The agent the stream belongs to."""
        ...

    @property
    def session_id(self) -> str:
        """The agent session the stream belongs to."""
        ...

    @property
    def connected(self) -> bool:
        """True while the stream is open and has delivered its first event."""
        ...


def stream_heartbeat_sender(
    client: AsyncSmartEMAPIClient,
    stream: ConnectedStream,
    *,
    interval: float,
    logger: logging.Logger | None = None,
) -> AgentHeartbeatSender:
    """A heartbeat sender for ``stream``'s agent session that beats only while ``stream`` is connected.

    The sender is not started; its owner starts and stops it (the stream itself for
    ``SSEAgentClient(heartbeat_interval=...)``, the daemon's heartbeat service otherwise).
    """
    return AgentHeartbeatSender(
        client,
        stream.agent_id,
        stream.session_id,
        interval=interval,
        # Read the flag at each beat: the stream connects and drops while the sender lives.
        is_connected=lambda: stream.connected,
        logger=logger,
    )
