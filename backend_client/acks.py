"""Instruction acknowledgements, as SmartEM answers them.

``POST /agent/{agent_id}/session/{session_id}/instructions/{instruction_id}/ack`` carries only the five
contract fields (SmartEM answers 422 to any other). A repeated ack is refused (SmartEM: 400 "... cannot be
acknowledged (invalid status)"; a stricter backend: 409 "already acknowledged"), which means the instruction
is already acknowledged: :func:`is_already_acknowledged` is that one rule, used by the
:class:`InstructionAcknowledger` behind ``SSEAgentClient.acknowledge*`` and by the daemon's journal-driven
acknowledgements alike.

:class:`InstructionAcknowledger` sends one ack with SmartEM-aware retries: an ack sent while the stream is down
waits for the reconnect; an ack that keeps failing with 500 stops after ``retry_count`` attempts and reports
``unconfirmed`` (see :class:`~backend_client.models.AckResult`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Literal, Protocol

import httpx

from backend_client import operations as ops
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.client import SmartEMAPIClient
from backend_client.errors import (
    BackendError,
    BackendUnavailableError,
    RequestRejectedError,
    ServerError,
)
from backend_client.models import (
    AckResult,
    AckStatus,
    AgentInstructionAcknowledgement,
    AgentInstructionAcknowledgementResponse,
)
from backend_client.retry import RetryPolicy, backoff_delay

__all__ = [
    "DEFAULT_ACK_CONNECT_WAIT",
    "AckFailureKind",
    "AckStreamGate",
    "InstructionAcknowledger",
    "classify_ack_failure",
    "is_already_acknowledged",
    "response_or_raise",
]

DEFAULT_ACK_CONNECT_WAIT = 60.0
"""How long an ack waits for the stream to come back before posting anyway, seconds."""

AckFailureKind = Literal["already", "not_connected", "retry", "fatal"]


def is_already_acknowledged(exc: BackendError) -> bool:
    """True when ``exc`` is the backend refusing a repeated ack: the instruction is already acknowledged.

    SmartEM answers a repeated ack with 400 "... cannot be acknowledged (invalid status)", a stricter backend
    with 409 "already acknowledged". The server's ``detail`` is read, or the message when there is none.
    """
    detail = (exc.detail or str(exc)).lower()
    return (
        isinstance(exc, RequestRejectedError)
        and exc.status_code in (400, 409)
        and ("invalid status" in detail or "already" in detail)
    )


def classify_ack_failure(exc: BackendError) -> AckFailureKind:
    """How an ack failure is handled, from SmartEM's documented and observed answers.

    * a repeated ack (:func:`is_already_acknowledged`): a previous ack landed -> success.
    * 400/404 "not connected" / "no active connection": the stream is down -> wait for it, retry.
    * transient errors, 500 (SmartEM maps every ack error to 500) and a 401 that survived a refresh -> retry
      (capped).
    * anything else (422 extra fields, 403 wrong agent, 404 unknown instruction) -> give up.
    """
    if is_already_acknowledged(exc):
        return "already"
    detail = (exc.detail or "").lower()
    status = exc.status_code
    if status in (400, 404) and ("not connected" in detail or "no active connection" in detail):
        return "not_connected"
    if isinstance(exc, BackendUnavailableError | ServerError) or status == 401:
        return "retry"
    return "fatal"


def response_or_raise(outcome: AckResult) -> AgentInstructionAcknowledgementResponse:
    """The backend's response of a confirmed ack (or the synthetic "already_acknowledged" one); raises the
    last error otherwise (the seed's ``acknowledge_instruction`` contract)."""
    if outcome.response is not None:
        return outcome.response
    if outcome.error is not None:
        raise outcome.error
    raise BackendError(f"acknowledgement not confirmed after {outcome.attempts} attempts")


class AckStreamGate(Protocol):
    """What an acknowledger needs from the instruction stream (``SSEAgentClient`` provides it)."""

    def should_wait_for_stream(self) -> bool:
        """True while the stream is being run but is down (an ack then waits for the reconnect)."""
        ...

    def wait_connected(self, timeout: float) -> bool:
        """Block the calling thread until the stream is connected or ``timeout`` seconds passed."""
        ...

    def api_for_current_loop(self) -> AsyncSmartEMAPIClient | None:
        """The streaming loop's API client when called on that loop, else None."""
        ...


class InstructionAcknowledger:
    """Sends acknowledgements of one agent session with SmartEM-aware retries.

    Args:
        agent_id: this agent's id.
        session_id: the agent session.
        gate: the instruction stream, to wait for its reconnect and share its API client.
        open_async_api: builds a temporary async API client (for acks sent from another event loop).
        open_sync_api: builds the sync API client of :meth:`acknowledge` (built once, on first use).
        connect_wait: how long an ack waits for a reconnect when the stream is down, seconds.
        retry_delay: first backoff between ack attempts, seconds.
        rng: random source for jitter.
        logger: logger of the outcome.
        on_sent: called once per confirmed (or already stored) ack.
    """

    def __init__(
        self,
        agent_id: str,
        session_id: str,
        *,
        gate: AckStreamGate,
        open_async_api: Callable[[], AsyncSmartEMAPIClient],
        open_sync_api: Callable[[], SmartEMAPIClient],
        connect_wait: float = DEFAULT_ACK_CONNECT_WAIT,
        retry_delay: float = 1.0,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        on_sent: Callable[[], None] = lambda: None,
    ) -> None:
        self.agent_id = agent_id
        self.session_id = session_id
        self.connect_wait = connect_wait
        self.retry_delay = retry_delay
        self._gate = gate
        self._open_async_api = open_async_api
        self._open_sync_api = open_sync_api
        self._rng = rng or random.Random()
        self._log = logger or logging.getLogger("backend_client.acks")
        self._on_sent = on_sent
        self._sync_api: SmartEMAPIClient | None = None
        # Acks may be sent from several worker threads at once; the sync client is built once.
        self._sync_api_lock = threading.Lock()

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
        """Acknowledge with retries and report the outcome (never raises for backend errors)."""
        body = _ack_body(status, result, error_message, processing_time_ms, processed_at)
        spec = ops.acknowledge(self.agent_id, self.session_id, instruction_id, body)
        tracker = _AckTracker(instruction_id, max(1, retry_count))
        while True:
            if self._gate.should_wait_for_stream():
                await self._wait_connected_async(self.connect_wait)
            try:
                async with self._async_api() as api:
                    response = await api.request(spec, retry=RetryPolicy.disabled())
            except BackendError as exc:
                if tracker.failed(exc) == "done":
                    return self._unsuccessful(tracker)
                await asyncio.sleep(tracker.delay(self.retry_delay, self._rng))
                continue
            return self._succeeded(tracker, response)

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
        body = _ack_body(status, result, error_message, processing_time_ms, processed_at)
        spec = ops.acknowledge(self.agent_id, self.session_id, instruction_id, body)
        tracker = _AckTracker(instruction_id, max(1, retry_count))
        while True:
            if self._gate.should_wait_for_stream():
                self._gate.wait_connected(self.connect_wait)
            try:
                response = self._sync_client().request(spec, retry=RetryPolicy.disabled())
            except BackendError as exc:
                if tracker.failed(exc) == "done":
                    return self._unsuccessful(tracker)
                time.sleep(tracker.delay(self.retry_delay, self._rng))
                continue
            return self._succeeded(tracker, response)

    def close(self) -> None:
        """Release the sync HTTP client used by :meth:`acknowledge`."""
        with self._sync_api_lock:
            if self._sync_api is not None:
                self._sync_api.close()
                self._sync_api = None

    async def _wait_connected_async(self, wait_s: float) -> None:
        # The stream's connected flag is a threading.Event (acks may come from other threads); poll it cheaply.
        deadline = time.monotonic() + wait_s
        while self._gate.should_wait_for_stream() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def _async_api(self) -> AsyncGenerator[AsyncSmartEMAPIClient, None]:
        """The streaming loop's API client when acking from that loop, else a temporary one (closed after)."""
        shared = self._gate.api_for_current_loop()
        if shared is not None:
            yield shared
            return
        async with self._open_async_api() as api:
            yield api

    def _sync_client(self) -> SmartEMAPIClient:
        with self._sync_api_lock:
            if self._sync_api is None:
                self._sync_api = self._open_sync_api()
            return self._sync_api

    def _succeeded(
        self, tracker: _AckTracker, response: AgentInstructionAcknowledgementResponse
    ) -> AckResult:
        tracker.attempts += 1
        self._on_sent()
        return AckResult(
            outcome="acknowledged",
            attempts=tracker.attempts,
            maybe_delivered=True,
            response=response,
            last_status=200,
        )

    def _unsuccessful(self, tracker: _AckTracker) -> AckResult:
        error = tracker.last_error
        if tracker.already:
            self._on_sent()
            self._log.info(
                "instruction %s was already acknowledged",
                tracker.instruction_id,
                extra={"event": "sse.ack_repeat"},
            )
            return AckResult(
                outcome="already_acknowledged",
                attempts=tracker.attempts,
                maybe_delivered=True,
                response=AgentInstructionAcknowledgementResponse(
                    status="already_acknowledged",
                    instruction_id=tracker.instruction_id,
                    agent_id=self.agent_id,
                    session_id=self.session_id,
                ),
                last_status=error.status_code if error else None,
            )
        self._log.warning(
            "acknowledgement of %s not confirmed after %d attempts",
            tracker.instruction_id,
            tracker.attempts,
            extra={"event": "sse.ack_unconfirmed", "error": str(error)},
        )
        return AckResult(
            outcome="unconfirmed",
            attempts=tracker.attempts,
            maybe_delivered=tracker.maybe_delivered,
            last_error=str(error) if error else None,
            last_status=error.status_code if error else None,
        ).with_error(error)


def _ack_body(
    status: AckStatus,
    result: str | None,
    error_message: str | None,
    processing_time_ms: int | None,
    processed_at: datetime | None,
) -> AgentInstructionAcknowledgement:
    return AgentInstructionAcknowledgement(
        status=status,
        result=result,
        error_message=error_message,
        processing_time_ms=processing_time_ms,
        processed_at=processed_at,
    )


class _AckTracker:
    """Attempt bookkeeping shared by the sync and async ack drivers."""

    def __init__(self, instruction_id: str, attempts: int) -> None:
        self.instruction_id = instruction_id
        self.max_attempts = attempts
        self.attempts = 0
        self.maybe_delivered = False
        self.last_error: BackendError | None = None
        self.already = False

    def failed(self, exc: BackendError) -> Literal["again", "done"]:
        self.attempts += 1
        self.last_error = exc
        kind = classify_ack_failure(exc)
        if exc.status_code is None and not isinstance(exc.__cause__, httpx.ConnectError):
            # Timeout or dropped connection after the request was written: it may have been stored.
            self.maybe_delivered = True
        if kind == "already":
            self.already = True
            return "done"
        if kind == "fatal" or self.attempts >= self.max_attempts:
            return "done"
        return "again"

    def delay(self, base: float, rng: random.Random) -> float:
        return backoff_delay(self.attempts, base, max(base, 30.0), rng=rng)
