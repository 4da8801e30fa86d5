"""``SSEAgentClient``: SmartEM's agent client (instruction stream, acknowledgements, heartbeats) in one object.

The work is done in three modules; this one composes them behind the seed's class and method names:

* :mod:`backend_client.sse_stream`: the reconnecting instruction stream (:class:`SSEInstructionStream`,
  which ``SSEAgentClient`` extends);
* :mod:`backend_client.acks`: acknowledgements with SmartEM-aware retries, and the one rule that a repeated
  ack means "already acknowledged" (:func:`~backend_client.acks.is_already_acknowledged`);
* :mod:`backend_client.heartbeat`: the heartbeat sender, tied to a stream by
  :func:`~backend_client.heartbeat.stream_heartbeat_sender`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from backend_client.acks import (
    DEFAULT_ACK_CONNECT_WAIT,
    AckFailureKind,
    InstructionAcknowledger,
    classify_ack_failure,
    response_or_raise,
)
from backend_client.client import SmartEMAPIClient
from backend_client.heartbeat import AgentHeartbeatSender
from backend_client.models import AckResult, AckStatus, AgentInstructionAcknowledgementResponse
from backend_client.retry import RetryPolicy
from backend_client.sse_stream import DEFAULT_READ_TIMEOUT, SSEInstructionStream

__all__ = [
    "DEFAULT_ACK_CONNECT_WAIT",
    "DEFAULT_READ_TIMEOUT",
    "AckFailureKind",
    "AgentHeartbeatSender",
    "SSEAgentClient",
    "SSEInstructionStream",
    "classify_ack_failure",
]

Callback = Callable[[Any], Any]
"""Any stream callback (a plain or a coroutine function); kept under this name for existing importers."""


class SSEAgentClient(SSEInstructionStream):
    """SSE client of one agent session: instruction stream with reconnects, acknowledgements, heartbeats.

    Args:
        base_url: backend root URL.
        agent_id: this agent's id.
        session_id: the agent session (pre-created on the backend).
        timeout: connect timeout of the stream, and timeout of acks and heartbeats, seconds.
        max_retries: consecutive failed connection attempts before giving up; ``None`` retries forever
            (daemon).
        initial_retry_delay: first reconnect delay, seconds (the server's ``retry:`` overrides it).
        max_retry_delay: cap of one reconnect delay, seconds.
        auth: ``httpx.Auth`` for every request (token refreshed by ``ClientCredentialsAuth``).
        transport: async transport (tests inject ``httpx.MockTransport``).
        sync_transport: sync transport for :meth:`acknowledge_instruction` (defaults to ``transport`` when
            that object also implements the sync interface, as ``MockTransport`` does).
        read_timeout: silence (no byte, not even a ping) after which the stream is considered dead, seconds.
        heartbeat_interval: if set, POST a heartbeat this often while connected.
        ack_connect_wait: how long an ack waits for a reconnect when the stream is down, seconds.
        ack_retry_delay: first backoff between ack attempts, seconds (0 in tests).
        logger: logger (defaults to ``backend_client.sse``).
        verify: TLS verification.
        rng: random source for jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        base_url: str,
        agent_id: str,
        session_id: str,
        timeout: float = 30,
        max_retries: int | None = 10,
        initial_retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        read_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        ack_connect_wait: float = DEFAULT_ACK_CONNECT_WAIT,
        ack_retry_delay: float = 1.0,
        logger: logging.Logger | None = None,
        verify: bool | str = True,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url,
            agent_id,
            session_id,
            timeout,
            max_retries,
            initial_retry_delay,
            max_retry_delay,
            auth=auth,
            transport=transport,
            read_timeout=read_timeout,
            heartbeat_interval=heartbeat_interval,
            logger=logger,
            verify=verify,
            rng=rng,
        )
        if sync_transport is None and isinstance(transport, httpx.BaseTransport):
            sync_transport = transport
        self._sync_transport = sync_transport
        self._acks = InstructionAcknowledger(
            agent_id,
            session_id,
            gate=self,
            open_async_api=self._new_api,
            open_sync_api=self._new_sync_api,
            connect_wait=ack_connect_wait,
            retry_delay=ack_retry_delay,
            # The stream's random source: one seeded rng makes reconnect and ack jitter reproducible together.
            rng=self._rng,
            logger=self.logger,
            on_sent=self._count_ack,
        )

    @property
    def ack_connect_wait(self) -> float:
        """How long an ack waits for a reconnect when the stream is down, seconds."""
        return self._acks.connect_wait

    @ack_connect_wait.setter
    def ack_connect_wait(self, value: float) -> None:
        self._acks.connect_wait = value

    @property
    def ack_retry_delay(self) -> float:
        """First backoff between ack attempts, seconds."""
        return self._acks.retry_delay

    @ack_retry_delay.setter
    def ack_retry_delay(self, value: float) -> None:
        self._acks.retry_delay = value

    def _new_sync_api(self) -> SmartEMAPIClient:
        return SmartEMAPIClient(
            self.base_url,
            timeout=self.timeout,
            logger=self.logger,
            auth=self._auth,
            transport=self._sync_transport,
            verify=self._verify,
            retry=RetryPolicy.disabled(),  # the acknowledger retries, with SmartEM-aware rules
        )

    def _count_ack(self) -> None:
        self.stats["acks_sent"] += 1

    def close(self) -> None:
        """Release the sync HTTP client used by :meth:`acknowledge_instruction`."""
        self._acks.close()

    # -- acknowledgements (thin wrappers over backend_client.acks) --------------------------------------------

    async def acknowledge_async(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
        *,
        processed_at: datetime | None = None,
    ) -> AckResult:
        """Acknowledge with SmartEM-aware retries and report the outcome (never raises for backend errors)."""
        return await self._acks.acknowledge_async(
            instruction_id,
            status,
            result,
            error_message,
            processing_time_ms,
            retry_count,
            processed_at=processed_at,
        )

    def acknowledge(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
        *,
        processed_at: datetime | None = None,
    ) -> AckResult:
        """Blocking twin of :meth:`acknowledge_async` (safe from any thread, also while streaming)."""
        return self._acks.acknowledge(
            instruction_id,
            status,
            result,
            error_message,
            processing_time_ms,
            retry_count,
            processed_at=processed_at,
        )

    def acknowledge_instruction(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
    ) -> AgentInstructionAcknowledgementResponse:
        """Acknowledge an instruction with retry logic (SmartEM's signature).

        A repeated ack that SmartEM refuses with "invalid status" counts as success (the returned response has
        ``status == "already_acknowledged"``). Raises the last :class:`BackendError` when the ack could not be
        confirmed; use :meth:`acknowledge` for the full :class:`~backend_client.models.AckResult`.
        """
        outcome = self.acknowledge(
            instruction_id, status, result, error_message, processing_time_ms, retry_count
        )
        return response_or_raise(outcome)

    async def acknowledge_instruction_async(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
    ) -> AgentInstructionAcknowledgementResponse:
        """Async twin of :meth:`acknowledge_instruction`."""
        outcome = await self.acknowledge_async(
            instruction_id, status, result, error_message, processing_time_ms, retry_count
        )
        return response_or_raise(outcome)
