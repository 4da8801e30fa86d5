"""``InstructionService``: SSE stream -> journal -> executor -> acknowledgements, with one start/stop
lifecycle."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.aio import cancel_and_wait
from agent.instructions.acks import AckDispatcher, AckSender
from agent.instructions.config import ExecutorConfig
from agent.instructions.context import HandlerContext
from agent.instructions.executor import Executor
from agent.instructions.journal import InstructionJournal, RecordResult
from agent.instructions.models import InvalidInstructionEvent, ReceivedInstruction
from agent.instructions.registry import HandlerRegistry
from agent.state.database import Database
from backend_client.errors import SessionError

log = logging.getLogger(__name__)


class InstructionStream(Protocol):
    """The part of ``backend_client.SSEAgentClient`` the service uses (the seed's async streaming method)."""

    async def stream_instructions_async(
        self,
        instruction_callback: Callable[[Any], None],
        connection_callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[Exception], None] | None = None,
        auto_retry: bool = True,
    ) -> None:
        """Stream until stopped, calling back on instructions, connections and errors (reconnecting
        itself)."""
        ...


class InstructionService:
    """Receives instructions over SSE, journals them, executes them and acknowledges each exactly once.

    Start-up order matters: interrupted instructions are finished as failed first (so they are never re-run),
    then the executor resumes the queued ones, the ack dispatcher resends pending acks as soon as the stream
    is connected, and finally the stream is opened.
    """

    #: Pause before re-opening the stream after the client gave up (its own retries are exhausted).
    restart_delay_s: float = 5.0
    #: Pause after a session error (wrong agent id, inactive session): a configuration problem, not a blip.
    session_error_delay_s: float = 60.0

    def __init__(
        self,
        config: ExecutorConfig,
        db: Database,
        sse_client: InstructionStream,
        ack_sender: AckSender,
        context: HandlerContext,
        *,
        registry: HandlerRegistry | None = None,
    ) -> None:
        from agent.instructions.handlers import default_registry

        self.config = config
        self.journal = InstructionJournal(db)
        self.registry = registry if registry is not None else default_registry()
        self.context = context
        context.journal = self.journal
        self._sse = sse_client
        self._connected = False
        self.sse_state = "stopped"
        self.executor = Executor(config, self.journal, self.registry, context, on_finished=self._on_finished)
        self.acks = AckDispatcher(
            config,
            self.journal,
            ack_sender,
            is_connected=lambda: self._connected,
            on_refused=self.request_resync,
        )
        context.executor_facts = self.facts
        self._stream_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.received = 0
        self.duplicates = 0
        self.invalid_events = 0
        self.connections = 0
        self.last_error: str | None = None
        self.resyncs = 0
        self._last_resync = -math.inf

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover the journal, start the executor and ack dispatcher, open the stream."""
        if self._stream_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        interrupted = await asyncio.to_thread(self.journal.recover_interrupted)
        if interrupted:
            log.warning("instruction.interrupted_on_restart", extra={"instruction_ids": interrupted})
        pruned = await asyncio.to_thread(self.journal.prune, self.config.journal_retention_s)
        if pruned:
            log.info("instruction.journal_pruned", extra={"rows": pruned})
        await self.executor.start()
        await self.acks.start()
        self.sse_state = "connecting"
        self._stream_task = asyncio.create_task(self._stream_forever(), name="instruction-stream")

    async def stop(self) -> None:
        """Close the stream, drain in-flight instructions (bounded), flush due acks (bounded)."""
        task, self._stream_task = self._stream_task, None
        await cancel_and_wait(task)
        await self.executor.stop()
        # The stream is closed, but SmartEM keeps the connection "active" for ~2 minutes, so a last flush of
        # the acks that just became due usually lands; anything left is re-sent after the next start.
        await self.acks.stop(flush_timeout_s=min(5.0, self.config.drain_timeout_s + 1.0))
        self._connected = False
        self.sse_state = "stopped"
        if self.context.device is not None:
            await self.context.device.aclose()

    # -- stream --------------------------------------------------------------------------------------------

    async def _stream_forever(self) -> None:
        while True:
            delay = self.restart_delay_s
            try:
                await self._sse.stream_instructions_async(
                    self._on_instruction, self._on_connection, self._on_error, auto_retry=True
                )
                log.warning("instruction.stream_ended")
            except asyncio.CancelledError:
                raise
            except SessionError as exc:
                self.last_error = f"session error: {exc}"
                self.sse_state = "session_error"
                delay = self.session_error_delay_s
                log.error("instruction.stream_session_error", extra={"error": str(exc)})
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("instruction.stream_failed")
            self._set_connected(False)
            if self.sse_state != "session_error":
                self.sse_state = "reconnecting"
            await asyncio.sleep(delay)

    def request_resync(self) -> None:
        """Reconnect the stream now (at most once per ``resync_interval_s``) so the backend drains pending
        work."""
        now = time.monotonic()
        if self._stream_task is None or now - self._last_resync < self.config.resync_interval_s:
            return
        self._last_resync = now
        self.resyncs += 1
        log.info("instruction.stream_resync", extra={"resyncs": self.resyncs})
        old = self._stream_task
        old.cancel()
        self._stream_task = asyncio.create_task(self._restart_stream(old), name="instruction-stream")

    async def _restart_stream(self, old: asyncio.Task[None]) -> None:
        # Wait for the old stream to unwind. Not ``suppress(CancelledError): await old``: that would also
        # swallow a stop() that cancels this task meanwhile, and the stream would be re-opened for ever.
        await asyncio.wait({old})
        self._set_connected(False)
        await self._stream_forever()

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        # The SSE client may run callbacks on its own thread; asyncio primitives must be touched on the loop.
        if self._loop is None or threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_instruction(self, data: Any) -> None:
        """Journal the instruction before anything else happens (runs in the SSE client's callback)."""
        try:
            instruction = ReceivedInstruction.from_event(data)
        except (InvalidInstructionEvent, ValueError) as exc:
            # Without a usable instruction id there is nothing to acknowledge; the backend will expire it.
            self.invalid_events += 1
            self.last_error = str(exc)
            log.error("instruction.invalid_event", extra={"error": str(exc)})
            return
        lane = self.registry.lane_of(instruction.instruction_type)
        outcome = self.journal.record(instruction, lane)
        self.received += 1
        log.info(
            "instruction.received",
            extra={
                "instruction_id": instruction.instruction_id,
                "instruction_type": instruction.instruction_type,
                "priority": instruction.priority,
                "journal": outcome.value,
            },
        )
        if outcome is RecordResult.NEW:
            self._call_in_loop(lambda: self.executor.notify(lane))
        else:
            self.duplicates += 1
        # Receiving anything proves the stream is up (some clients report no connection event).
        self._call_in_loop(lambda: self._set_connected(True))
        if outcome is RecordResult.REACK:
            self._call_in_loop(self.acks.wake)

    def _on_connection(self, data: Any) -> None:
        self.connections += 1
        log.info("instruction.stream_connected", extra={"connections": self.connections})
        self._call_in_loop(lambda: self._set_connected(True, reconnect=True))

    def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("instruction.stream_error", extra={"error": self.last_error})
        self._call_in_loop(lambda: self._set_connected(False))

    def _set_connected(self, connected: bool, *, reconnect: bool = False) -> None:
        was = self._connected
        self._connected = connected
        if connected:
            self.sse_state = "connected"
            if reconnect or not was:
                # SmartEM never re-sends an instruction it already sent: ack everything pending now.
                self.acks.on_connected()
        elif self.sse_state == "connected":
            self.sse_state = "reconnecting"

    def _on_finished(self, instruction_id: str) -> None:
        self.acks.wake()

    # -- introspection -------------------------------------------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """Counters of the whole service (status line, ``agent.status.request``)."""
        return {
            **self.executor.facts(),
            "received": self.received,
            "duplicates": self.duplicates,
            "invalid_events": self.invalid_events,
            "sse_state": self.sse_state,
            "connections": self.connections,
            "acks_sent": self.acks.sent,
            "ack_failures": self.acks.failures,
            "acks_given_up": self.acks.given_up,
            "stream_resyncs": self.resyncs,
            "last_error": self.last_error or self.acks.last_error,
        }

    def snapshot(self) -> dict[str, Any]:
        """The status-line fields, including journal counts."""
        return {**self.facts(), "journal": self.journal.stats(), "at": time.time()}
