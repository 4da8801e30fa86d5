"""What handlers may use: the device, the decision service, the state directory, runtime settings,
introspection.

The device is reached through :class:`DeviceHandle`: one lane to the asynchronous device facade
(:class:`agent.devices.microscope.Microscope`), on the daemon's own event loop. An :class:`asyncio.Lock` keeps
instrument actions strictly serial, and cancellation is asyncio's own: a handler cancelled by its time limit, or
by a stop, is cancelled where it awaits the device, and the next call starts only once it has unwound. No thread
and no second event loop sit on this path; a blocking driver is called off the loop inside its backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.aio import cancel_and_wait
from agent.devices.athena import AthenaClient
from agent.devices.backend import DeviceBackend
from agent.devices.guardrails import ImagingGuardrails
from agent.devices.microscope import Microscope, open_microscope
from agent.instructions.config import RuntimeConfig
from agent.instructions.introspection import IngestIntrospection
from agent.instructions.journal import InstructionJournal

log = logging.getLogger(__name__)

D = TypeVar("D")
T = TypeVar("T")


class DeviceHandle(Generic[D]):
    """A lazily opened device, driven one call at a time on the caller's event loop.

    ``opener`` opens the device (for Semphony: resume the run, start a guarded session, attach the device); it
    is awaited at the first call and again after :meth:`reset` (e.g. when the server lost the session).
    ``closer`` releases an opened device on :meth:`aclose`; ``release`` (idempotent; e.g. closing the backend)
    runs last, opened or not. Each of the two is bounded by ``close_timeout_s``, and a call still in progress
    when closing starts is cancelled first, so a hung device call cannot hold up a stop. ``call_timeout_s``, when
    set, bounds each :meth:`run` once it holds the lane (a handler's own time limit is usually the bound).
    """

    def __init__(
        self,
        opener: Callable[[], Awaitable[D]],
        closer: Callable[[D], Awaitable[None]] | None = None,
        *,
        release: Callable[[], Awaitable[None]] | None = None,
        close_timeout_s: float = 10.0,
        call_timeout_s: float | None = None,
    ) -> None:
        self._opener = opener
        self._closer = closer
        self._release = release
        self._close_timeout_s = close_timeout_s
        self._call_timeout_s = call_timeout_s
        self._device: D | None = None
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def run(self, fn: Callable[[D], Awaitable[T]]) -> T:
        """Await ``fn(device)`` in the device lane and return its result (exceptions propagate)."""
        if self._closed:
            raise RuntimeError("the device handle is closed")
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with self._lock, asyncio.timeout(self._call_timeout_s):
                if self._device is None:
                    self._device = await self._opener()
                return await fn(self._device)
        finally:
            if task is not None:
                self._inflight.discard(task)

    def reset(self) -> None:
        """Forget the opened device so the next call opens it again."""
        self._device = None

    @property
    def is_open(self) -> bool:
        """Whether the device has been opened."""
        return self._device is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` ran."""
        return self._closed

    async def aclose(self) -> None:
        """Cancel a call still in progress, close the device (if opened), then run ``release`` (idempotent).

        Every step is bounded by ``close_timeout_s``; a step that overruns is logged and the stop goes on.
        """
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in list(self._inflight):
            if task is not current:
                # The caller of run() (a handler) is cancelled where it waits on the device.
                await self._bounded("device.cancel", cancel_and_wait(task))
        device, self._device = self._device, None
        if device is not None and self._closer is not None:
            await self._bounded("device.close", self._closer(device))
        if self._release is not None:
            await self._bounded("device.release", self._release())

    async def _bounded(self, step: str, aw: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await aw
        except TimeoutError:
            log.warning(f"{step}_timeout", extra={"timeout_s": self._close_timeout_s})
        except Exception:
            log.exception(f"{step}_failed")

    def close(self) -> None:
        """Close from a thread that is not the handle's loop (e.g. through ``asyncio.to_thread``).

        The closing runs on the loop the handle was used on, as :meth:`aclose`; without one (never used, or that
        loop has ended) nothing can be in progress and only the flag is set. Prefer ``await aclose()``.
        """
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is loop:
            raise RuntimeError("DeviceHandle.close() on its own event loop would deadlock; await aclose()")
        if self._closed or loop is None or loop.is_closed() or not loop.is_running():
            self._closed = True
            return
        future = asyncio.run_coroutine_threadsafe(self.aclose(), loop)
        try:
            future.result(timeout=3 * self._close_timeout_s)
        except concurrent.futures.TimeoutError:
            log.warning("device.close_timeout", extra={"timeout_s": 3 * self._close_timeout_s})


def microscope_handle(
    backend: DeviceBackend,
    *,
    run_name: str = "em-agent",
    device_slug: str = "sem-001",
    guardrails: ImagingGuardrails | None = None,
    close_timeout_s: float = 10.0,
) -> DeviceHandle[Microscope]:
    """The daemon's device: a handle that opens a guarded session on ``backend`` and attaches the SEM at first
    use (taking it over from a crashed predecessor), closes the session on :meth:`DeviceHandle.aclose` and then
    the backend. The agent never drives the instrument without guardrails unless told to explicitly: ``None``
    means the default :class:`ImagingGuardrails`."""
    rules = guardrails if guardrails is not None else ImagingGuardrails()

    async def opener() -> Microscope:
        return await open_microscope(backend, run_name=run_name, device_slug=device_slug, guardrails=rules)

    async def closer(scope: Microscope) -> None:
        await scope.session.close()

    return DeviceHandle(opener, closer, release=backend.close, close_timeout_s=close_timeout_s)


@dataclass(frozen=True)
class DecisionTarget:
    """Where queue decisions go: an Athena client and the Athena session of the running EPU session."""

    client: AthenaClient
    session_id: str


@dataclass
class HandlerContext:
    """Dependencies shared by all handlers.

    ``device`` is None when the agent runs without a microscope: device instructions are then declined.
    ``decisions`` is None when no Athena decision service is configured: queue-decision instructions are then
    declined. ``executor_facts`` returns the executor's own counters (set by the service).
    """

    state_dir: Path
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    device: DeviceHandle[Any] | None = None
    decisions: DecisionTarget | None = None
    introspection: IngestIntrospection | None = None
    executor_facts: Callable[[], dict[str, Any]] = dict
    journal: InstructionJournal | None = None
    agent_id: str | None = None
    session_id: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def images_dir(self) -> Path:
        """Where ``take_image``/``sem.acquire`` save images (inside the state directory)."""
        return self.state_dir / "images"

    @property
    def rois_dir(self) -> Path:
        """Where ``sem.save_roi`` saves ROI pyramids (inside the state directory)."""
        return self.state_dir / "rois"


@dataclass(frozen=True)
class Call:
    """One handler invocation: the instruction's id and type, and the shared context."""

    instruction_id: str
    instruction_type: str
    context: HandlerContext
