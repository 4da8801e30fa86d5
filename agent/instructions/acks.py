"""Acknowledgements: sent from the journal, one final ack per instruction, retried until the backend confirms.

SmartEM acks are one-shot (a second ack, or ``received`` then ``processed``, is refused), need a live SSE
connection, and their errors all look alike (500). So: the agent sends only the final status; it sends acks
only while the stream is connected (attempts that could not succeed do not use up the budget); after a
reconnect every pending ack is due at once, because SmartEM does not re-send an instruction it already sent;
and an ack that keeps failing while connected is given up after ``ack_max_attempts`` (it may well have landed:
SmartEM answers a repeat with 500), to be re-armed if the backend redelivers the instruction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from agent.aio import cancel_and_wait
from agent.instructions.config import ExecutorConfig
from agent.instructions.journal import AckAttempt, InstructionJournal
from backend_client.acks import is_already_acknowledged
from backend_client.errors import BackendError, RequestRejectedError, ServerError, SessionError
from backend_client.models import AgentInstructionAcknowledgement, AgentInstructionAcknowledgementResponse

log = logging.getLogger(__name__)


class AckSender(Protocol):
    """Sends one acknowledgement; returns when the backend confirmed it, raises ``BackendError`` otherwise.

    A repeated ack that the backend reports as "already acknowledged" must count as confirmed
    (:func:`backend_client.acks.is_already_acknowledged` says which answers mean that).
    """

    async def send_ack(self, ack: AckAttempt) -> None:
        """Send ``ack``."""
        ...


def _is_permanent(exc: BaseException) -> bool:
    # 422: the body itself is wrong (an agent bug); resending the same bytes cannot help. Other 4xx from
    # SmartEM ("not connected", "session not active") can clear up after a reconnect.
    return isinstance(exc, RequestRejectedError) and exc.status_code == 422


class AckDispatcher:
    """Background task sending due acknowledgements from the journal.

    ``is_connected`` reports whether the SSE stream is up; :meth:`on_connected` must be called when it
    (re)connects and :meth:`wake` when a new outcome is journaled.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        journal: InstructionJournal,
        sender: AckSender,
        *,
        is_connected: Callable[[], bool] = lambda: True,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._journal = journal
        self._sender = sender
        self._is_connected = is_connected
        self._on_refused = on_refused
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0
        self.failures = 0
        self.given_up = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        """Start the sending loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="instruction-acks")

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is due (within ``flush_timeout_s``), then stop; unsent acks stay in the journal."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._is_connected() and flush_timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout_s):
                    await self.send_due()

    def wake(self) -> None:
        """New outcomes were journaled."""
        self._wake.set()

    def on_connected(self) -> None:
        """The stream (re)connected: every pending ack is due now."""
        self._journal.rearm_acks()
        self._wake.set()

    async def send_due(self) -> int:
        """Send every due acknowledgement once; returns how many were confirmed."""
        confirmed = 0
        while True:
            due = await asyncio.to_thread(self._journal.due_acks)
            if not due:
                return confirmed
            progressed = False
            for ack in due:
                if not self._is_connected():
                    return confirmed
                ok = await self._send_one(ack)
                confirmed += int(ok)
                progressed = progressed or ok
            if not progressed:
                return confirmed

    async def _send_one(self, ack: AckAttempt) -> bool:
        try:
            await self._sender.send_ack(ack)
        except BackendError as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            connected = self._is_connected() and not isinstance(exc, SessionError)
            if (
                connected
                and self._on_refused is not None
                and isinstance(exc, ServerError | RequestRejectedError)
            ):
                self._on_refused()
            attempts = ack.attempts + (1 if connected else 0)
            give_up = _is_permanent(exc) or attempts >= self._config.ack_max_attempts
            retry_at = None if give_up else time.time() + self._backoff(attempts)
            await asyncio.to_thread(
                self._journal.ack_failed,
                ack.instruction_id,
                self.last_error,
                retry_at=retry_at,
                counted=connected,
            )
            if give_up:
                self.given_up += 1
                log.error(
                    "instruction.ack_given_up",
                    extra={
                        "instruction_id": ack.instruction_id,
                        "attempts": attempts,
                        "error": self.last_error,
                    },
                )
            else:
                log.warning(
                    "instruction.ack_retry",
                    extra={
                        "instruction_id": ack.instruction_id,
                        "attempts": attempts,
                        "error": self.last_error,
                    },
                )
            return False
        await asyncio.to_thread(self._journal.ack_confirmed, ack.instruction_id)
        self.sent += 1
        return True

    def _backoff(self, attempts: int) -> float:
        base = min(self._config.ack_max_delay_s, self._config.ack_initial_delay_s * 2 ** max(0, attempts - 1))
        return float(base * random.uniform(0.75, 1.25))

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if self._is_connected():
                try:
                    await self.send_due()
                except Exception:
                    # The journal or sender misbehaved unexpectedly; keep the loop alive and try again later.
                    log.exception("instruction.ack_loop_error")
            timeout: float | None = None
            if self._is_connected():
                nxt = await asyncio.to_thread(self._journal.next_ack_time)
                if nxt is not None:
                    timeout = max(0.0, nxt - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()


class AcknowledgingClient(Protocol):
    """The acknowledgement method of ``backend_client.AsyncSmartEMAPIClient``."""

    async def acknowledge_instruction(
        self,
        agent_id: str,
        session_id: str,
        instruction_id: str,
        acknowledgement: AgentInstructionAcknowledgement,
    ) -> AgentInstructionAcknowledgementResponse:
        """POST one acknowledgement."""
        ...


class ApiAckSender:
    """:class:`AckSender` over ``AsyncSmartEMAPIClient.acknowledge_instruction``.

    Sends only SmartEM's ack fields (it answers 422 to any other) and counts the answer to a repeated ack as
    confirmed (:func:`backend_client.acks.is_already_acknowledged`, the rule ``SSEAgentClient`` applies too):
    the backend already holds an acknowledgement for that instruction.
    """

    def __init__(self, client: AcknowledgingClient, agent_id: str, session_id: str) -> None:
        self._client = client
        self._agent_id = agent_id
        self._session_id = session_id

    async def send_ack(self, ack: AckAttempt) -> None:
        """POST ``ack``; raises ``BackendError`` unless the backend confirmed it (or already had it)."""
        body = AgentInstructionAcknowledgement(
            status=ack.status.value,
            result=ack.result,
            error_message=ack.error_message,
            processing_time_ms=ack.processing_time_ms,
            processed_at=ack.finished_at,
        )
        try:
            await self._client.acknowledge_instruction(
                self._agent_id, self._session_id, ack.instruction_id, body
            )
        except BackendError as exc:
            if is_already_acknowledged(exc):
                log.info("instruction.ack_already_stored", extra={"instruction_id": ack.instruction_id})
                return
            raise
