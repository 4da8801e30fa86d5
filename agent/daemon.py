"""The daemon: runs the long-running parts that :mod:`agent.app` composes, and owns their lifecycle.

Parts (each with async ``start()``/``stop()``): the ingest service (watcher, pipeline, outbox flusher), the
instruction service (SSE listener, journal, executor, acks), the agent heartbeat, the log shipper. The daemon adds
the periodic ``agent.status`` line, systemd notifications (READY, STATUS, WATCHDOG, STOPPING) and signal handling:
the first SIGTERM/SIGINT (or a Windows service stop) drains in-flight work within ``shutdown_timeout_s``; a second
signal exits at once. With ``stall_exit_s`` set, a stop that has not finished after that long exits the process
with every thread's stack on stderr (:mod:`agent.process.stall`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.process import stall
from agent.process.sd_notify import SystemdNotifier

log = logging.getLogger("agent.daemon")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_FORCED = 130


class Service(Protocol):
    """A long-running part of the agent."""

    async def start(self) -> None:
        """Start background work and return."""

    async def stop(self) -> None:
        """Stop, draining in-flight work within the part's own bound."""


@dataclass
class NamedService:
    """A service with the name used in logs and a snapshot function for the status line."""

    name: str
    service: Service
    snapshot: Callable[[], dict[str, Any]] | None = None


@dataclass
class Daemon:
    """Runs services until asked to stop; see the module docstring."""

    services: list[NamedService]
    status_interval_s: float = 60.0
    shutdown_timeout_s: float = 30.0
    notifier: SystemdNotifier = field(default_factory=SystemdNotifier)
    extra_status: Callable[[], dict[str, Any]] | None = None
    on_started: Callable[[], Awaitable[None]] | None = None
    #: Once a stop begins, exit with thread stacks on stderr if still alive after this long (None: never).
    stall_exit_s: float | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    #: Set on a stop or a new status period, so that the status loop does not sleep out the old period.
    _status_wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _signals: int = field(default=0, init=False)
    _started_at: float = field(default_factory=time.monotonic, init=False)
    _forced: bool = field(default=False, init=False)

    def request_stop(self, reason: str = "requested") -> None:
        """Ask for a graceful stop (thread-safe through ``loop.call_soon_threadsafe``)."""
        if not self._stop.is_set():
            log.info("agent.stopping", extra={"reason": reason})
        self._stop.set()
        self._status_wake.set()

    def set_status_interval(self, seconds: float) -> None:
        """Change the period of the ``agent.status`` line now: the next line is due one new period after the
        last one (at once if that is already past), not after the old period has run out."""
        if seconds <= 0:
            raise ValueError(f"status interval must be positive, got {seconds}")
        self.status_interval_s = seconds
        self._status_wake.set()

    def _on_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals >= 2:
            # Second signal: the operator wants out now; skip the drain.
            log.warning("agent.forced_exit", extra={"signal": signame})
            self._forced = True
            os._exit(EXIT_FORCED)
        self.request_stop(f"signal {signame}")

    def status(self) -> dict[str, Any]:
        """The fields of the periodic ``agent.status`` line."""
        out: dict[str, Any] = {"uptime_s": round(time.monotonic() - self._started_at, 1)}
        for part in self.services:
            if part.snapshot is not None:
                try:
                    out[part.name] = part.snapshot()
                except Exception as exc:  # a broken snapshot must not stop the status line
                    out[part.name] = {"error": str(exc)}
        if self.extra_status is not None:
            out.update(self.extra_status())
        return out

    async def _status_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            remaining = last + self.status_interval_s - time.monotonic()
            if remaining > 0:
                self._status_wake.clear()
                woken = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._status_wake.wait(), remaining)
                    woken = True
                if woken and not self._stop.is_set():
                    continue  # a new period: work out again when the next line is due
            last = time.monotonic()
            status = self.status()
            log.info("agent.status", extra=status)
            self.notifier.status(_short_status(status))

    async def _watchdog_loop(self, interval: float) -> None:
        # Pinged from the event loop itself: if the loop hangs, systemd notices and restarts the agent.
        while not self._stop.is_set():
            self.notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> graceful stop; a second one exits at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(
                NotImplementedError, RuntimeError
            ):  # Windows: the service stop path is used
                loop.add_signal_handler(sig, self._on_signal, sig.name)

    async def run(self) -> int:
        """Start every service, run until stopped, stop them in reverse order within the bound."""
        started: list[NamedService] = []
        exit_code = EXIT_OK
        try:
            for part in self.services:
                await part.service.start()
                started.append(part)
                log.info("agent.service_started", extra={"service": part.name})
            if self.on_started is not None:
                await self.on_started()
        except Exception:
            log.exception("agent.start_failed")
            exit_code = EXIT_FAILURE
            self._stop.set()
        background = [asyncio.create_task(self._status_loop(), name="status")]
        if self.notifier.watchdog_interval_s:
            background.append(asyncio.create_task(self._watchdog_loop(self.notifier.watchdog_interval_s)))
        if exit_code == EXIT_OK:
            self.notifier.ready("running")
            log.info("agent.ready", extra={"services": [p.name for p in started]})
        await self._stop.wait()
        self.notifier.stopping()
        if self.stall_exit_s is not None:
            stall.arm(self.stall_exit_s)
        exit_code = max(exit_code, await self._shutdown(started))
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        log.info("agent.stopped", extra={"exit_code": exit_code, **self.status()})
        return exit_code

    async def _shutdown(self, started: list[NamedService]) -> int:
        deadline = time.monotonic() + self.shutdown_timeout_s
        code = EXIT_OK
        for part in reversed(started):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(part.service.stop(), remaining)
            except TimeoutError:
                log.error(
                    "agent.stop_timeout", extra={"service": part.name, "timeout_s": round(remaining, 1)}
                )
                code = EXIT_FAILURE
            except Exception:
                log.exception("agent.stop_failed", extra={"service": part.name})
                code = EXIT_FAILURE
        return code


def _short_status(status: dict[str, Any]) -> str:
    ingest = status.get("ingest", {})
    instr = status.get("instructions", {})
    parts = []
    if isinstance(ingest, dict) and ingest:
        orphans = ingest.get("orphans")
        total = sum(orphans.values()) if isinstance(orphans, dict) else "?"
        parts.append(f"outbox={ingest.get('outbox_depth', '?')} orphans={total}")
    if isinstance(instr, dict) and instr:
        parts.append(f"instructions={instr.get('handled', '?')} sse={instr.get('sse_state', '?')}")
    return "running " + " ".join(parts) if parts else "running"
