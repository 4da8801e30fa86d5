"""The executor: takes journaled instructions in order, runs their handlers in two lanes, records one outcome
each.

Lanes: the ``device`` lane has one worker, so instrument actions run strictly one at a time; the ``query``
lane has ``query_concurrency`` workers, so ``agent.*`` queries (and the declines of unknown types) never wait
behind a slow stage move or a pump-down. Within a lane the journal hands out work by priority rank, then
sequence number, then arrival order.

Outcome rules (design.md "Instructions"): expired -> ``declined`` without running; unknown type ->
``declined`` listing the known types; invalid payload -> ``declined`` with the validation message; guardrail
violation -> ``declined`` with the guardrail type and details; a call the device cannot express (OpenFIBSEM has no
tilt correction, say) -> ``declined`` with the reason; device, decision-service or handler error ->
``failed``; time limit exceeded -> ``failed``; otherwise ``processed`` with the handler's JSON result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from agent.devices.errors import (
    AthenaError,
    SemphonyApiError,
    SemphonyGuardrailException,
    SemphonyUnsupportedError,
)
from agent.instructions.config import ExecutorConfig
from agent.instructions.context import Call, HandlerContext
from agent.instructions.errors import InstructionDeclined, InstructionFailed
from agent.instructions.journal import INTERRUPTED_MESSAGE, InstructionJournal
from agent.instructions.models import AckStatus, JournalEntry, Lane, Outcome
from agent.instructions.registry import HandlerRegistry

log = logging.getLogger(__name__)


def validation_message(exc: ValidationError) -> str:
    """A one-line summary of a payload validation error: ``field: problem; ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid payload: " + "; ".join(parts)


def encode_result(result: dict[str, Any] | None, max_bytes: int) -> str | None:
    """Serialise a result for the ack (a JSON string, as SmartEM stores it); oversize results are
    summarised."""
    if result is None:
        return None
    text = json.dumps(to_jsonable_python(result), sort_keys=True, allow_nan=False)
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    return json.dumps({"truncated": True, "size_bytes": len(text.encode("utf-8")), "keys": sorted(result)})


class Executor:
    """Runs the journal's queued instructions; see the module docstring.

    ``on_finished`` is called (in the event loop) after each outcome is journaled, so the ack dispatcher can
    send it at once.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        journal: InstructionJournal,
        registry: HandlerRegistry,
        context: HandlerContext,
        *,
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._journal = journal
        self._registry = registry
        self._context = context
        self._on_finished = on_finished
        self._wake = {lane: asyncio.Event() for lane in Lane}
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._in_flight: dict[str, str] = {}
        self.outcomes: Counter[str] = Counter()
        self.handled = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the lane workers (one device worker, ``query_concurrency`` query workers)."""
        if self._workers:
            return
        self._stopping = False
        self._workers.append(asyncio.create_task(self._worker(Lane.DEVICE), name="instructions-device"))
        for i in range(self._config.query_concurrency):
            self._workers.append(
                asyncio.create_task(self._worker(Lane.QUERY), name=f"instructions-query-{i}")
            )
        for lane in Lane:
            self._wake[lane].set()

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop taking work; let in-flight handlers finish within the bound, then cancel them.

        A cancelled handler is journaled as failed ("interrupted") and acknowledged like any other outcome.
        """
        self._stopping = True
        for lane in Lane:
            self._wake[lane].set()
        timeout = self._config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        workers, self._workers = self._workers, []
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def notify(self, lane: Lane) -> None:
        """New work was journaled for ``lane``."""
        self._wake[lane].set()

    @property
    def in_flight(self) -> dict[str, str]:
        """Instruction id -> type of the handlers running now."""
        return dict(self._in_flight)

    # -- work ----------------------------------------------------------------------------------------------

    async def _worker(self, lane: Lane) -> None:
        wake = self._wake[lane]
        while not self._stopping:
            # Clear before looking, so a notify that lands after the look is not lost.
            wake.clear()
            entry = await asyncio.to_thread(self._journal.claim_next, lane)
            if entry is None:
                await wake.wait()
                continue
            # Other workers of this lane may be waiting on the same event: more work may remain.
            wake.set()
            await self._run(entry)

    async def _run(self, entry: JournalEntry) -> None:
        started = time.monotonic()
        self._in_flight[entry.instruction_id] = entry.instruction_type
        try:
            outcome = await self.execute(entry)
        except asyncio.CancelledError:
            outcome = Outcome.failed(INTERRUPTED_MESSAGE, interrupted=True)
            await self._record(entry, outcome, started)
            raise
        finally:
            self._in_flight.pop(entry.instruction_id, None)
        await self._record(entry, outcome, started)

    async def _record(self, entry: JournalEntry, outcome: Outcome, started: float) -> None:
        elapsed_ms = int((time.monotonic() - started) * 1000)
        try:
            result_json = encode_result(outcome.result, self._config.max_result_bytes)
        except (TypeError, ValueError) as exc:
            # A handler bug must still end in one clear ack, not a stuck row.
            outcome = Outcome.failed(f"result is not JSON-serialisable: {exc}")
            result_json = encode_result(outcome.result, self._config.max_result_bytes)
        await asyncio.to_thread(self._journal.finish, entry.instruction_id, outcome, result_json, elapsed_ms)
        self.handled += 1
        self.outcomes[outcome.status.value] += 1
        log.info(
            "instruction.finished",
            extra={
                "instruction_id": entry.instruction_id,
                "instruction_type": entry.instruction_type,
                "status": outcome.status.value,
                "error": outcome.error_message,
                "elapsed_ms": elapsed_ms,
            },
        )
        if self._on_finished is not None:
            self._on_finished(entry.instruction_id)

    async def execute(self, entry: JournalEntry) -> Outcome:
        """Decide the outcome of one instruction (no journaling; exposed for tests and the runner)."""
        if entry.expires_at is not None:
            now = datetime.now(UTC)
            if entry.expires_at.timestamp() + self._config.expiry_grace_s <= now.timestamp():
                return Outcome.declined(
                    f"expired at {entry.expires_at.isoformat()} before it could run",
                    expired=True,
                    expires_at=entry.expires_at.isoformat(),
                )
        spec = self._registry.get(entry.instruction_type)
        if spec is None:
            return Outcome.declined(
                f"unknown instruction type {entry.instruction_type!r}", known_types=self._registry.types()
            )
        if not self._config.is_enabled(entry.instruction_type):
            return Outcome.declined(
                f"instruction type {entry.instruction_type!r} is not enabled on this agent "
                "(configuration key instructions.enabled_types)",
                enabled_types=self._config.enabled_types,
            )
        try:
            payload = spec.payload_model.model_validate({} if entry.payload is None else entry.payload)
        except ValidationError as exc:
            return Outcome.declined(validation_message(exc))
        call = Call(entry.instruction_id, entry.instruction_type, self._context)
        timeout = self._config.timeout_for(entry.instruction_type)
        try:
            async with asyncio.timeout(timeout):
                result = await spec.handler(payload, call)
        except TimeoutError:
            return Outcome.failed(f"timed out after {timeout:g} s", timeout_s=timeout)
        except SemphonyGuardrailException as exc:
            return Outcome.declined(
                f"guardrail {exc.guardrail_type} violated",
                guardrail_type=exc.guardrail_type,
                details=to_jsonable_python(exc.details, fallback=str),
            )
        except InstructionDeclined as exc:
            return Outcome.declined(exc.message, **to_jsonable_python(exc.details, fallback=str))
        except InstructionFailed as exc:
            return Outcome.failed(exc.message, **to_jsonable_python(exc.details, fallback=str))
        except SemphonyUnsupportedError as exc:
            # The device cannot express the call at all: nothing was attempted, so it is a refusal.
            return Outcome.declined(
                f"not available on this device: {exc.reason}", unsupported=True, reason=exc.reason
            )
        except SemphonyApiError as exc:
            return Outcome.failed(f"device error: {exc}", status_code=exc.status_code)
        except AthenaError as exc:
            return Outcome.failed(f"decision service error: {exc}", status_code=exc.status_code)
        except ValidationError as exc:
            # A model built inside the handler (e.g. a device config) rejected a value the payload allowed.
            return Outcome.declined(validation_message(exc))
        except Exception as exc:
            log.exception(
                "instruction.handler_error",
                extra={"instruction_id": entry.instruction_id, "instruction_type": entry.instruction_type},
            )
            return Outcome.failed(f"internal error: {type(exc).__name__}: {exc}")
        return Outcome(AckStatus.PROCESSED, result, None)

    def facts(self) -> dict[str, Any]:
        """The executor's own counters (for ``agent.status.request`` and the status line)."""
        return {
            "handled": self.handled,
            "outcomes": dict(self.outcomes),
            "in_flight": self.in_flight,
        }
