"""What handlers may use: the device, the decision service, the state directory, runtime settings,
introspection.

The device is reached through :class:`DeviceHandle`, which owns one dedicated thread. The Semphony SDK surface
is blocking, and running every device call on the same single thread keeps instrument actions strictly serial
even when a handler is cancelled by its time limit (the call in progress finishes before the next one starts).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.devices.athena import AthenaClient
from agent.instructions.config import RuntimeConfig
from agent.instructions.introspection import IngestIntrospection
from agent.instructions.journal import InstructionJournal

log = logging.getLogger(__name__)

D = TypeVar("D")
T = TypeVar("T")


class DeviceHandle(Generic[D]):
    """A lazily opened device used from one dedicated thread.

    ``factory`` opens the device (for Semphony: create or resume the run, start a session, attach the device);
    it runs on the device thread at the first call and again after :meth:`reset` (e.g. when the server lost
    the session). ``closer`` releases an opened device on :meth:`close`, on the device thread, after the call in
    progress. ``release`` (idempotent; e.g. closing the SDK client) runs last, opened or not, and also ends a
    call that is still in progress after ``close_timeout_s``, so a hung device call cannot hold up a stop.
    """

    def __init__(
        self,
        factory: Callable[[], D],
        closer: Callable[[D], None] | None = None,
        *,
        release: Callable[[], None] | None = None,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._factory = factory
        self._closer = closer
        self._release = release
        self._close_timeout_s = close_timeout_s
        self._device: D | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="em-agent-device")
        self._lock = threading.Lock()

    def _with_device(self, fn: Callable[[D], T]) -> T:
        with self._lock:
            if self._device is None:
                self._device = self._factory()
            device = self._device
        return fn(device)

    async def run(self, fn: Callable[[D], T]) -> T:
        """Run ``fn(device)`` on the device thread and return its result (exceptions propagate)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._with_device, fn)

    def reset(self) -> None:
        """Forget the opened device so the next call opens it again."""
        with self._lock:
            self._device = None

    @property
    def is_open(self) -> bool:
        """Whether the device has been opened."""
        return self._device is not None

    def close(self) -> None:
        """Release the device (if opened) after the call in progress, waiting at most ``close_timeout_s`` for
        that call; then run ``release`` and stop the device thread."""
        with self._lock:
            device, self._device = self._device, None
        stuck = False
        if device is not None and self._closer is not None:
            closing = self._pool.submit(self._closer, device)
            try:
                closing.result(timeout=self._close_timeout_s)
            except TimeoutError:
                # A device call is still running: releasing the client below ends it with an error.
                stuck = True
                log.warning("device.close_timeout", extra={"timeout_s": self._close_timeout_s})
            except Exception:
                log.exception("device.close_failed")
        if self._release is not None:
            try:
                self._release()
            except Exception:
                log.exception("device.release_failed")
        # Join the device thread unless it was stuck (released above, it ends on its own).
        self._pool.shutdown(wait=not stuck, cancel_futures=True)


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
