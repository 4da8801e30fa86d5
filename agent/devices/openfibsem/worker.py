"""One dedicated thread for every blocking OpenFIBSEM call, awaited from the event loop with a time limit.

Why a thread of our own rather than ``asyncio.to_thread`` or a ``ThreadPoolExecutor``: OpenFIBSEM drives the
microscope through a vendor connection that must see one call at a time, in order; and the interpreter joins
executor threads at exit, so one hung vendor call would hang the agent's shutdown. This worker is a daemon
thread: a call past its limit is reported (504), later calls are refused at once (503) instead of queueing
behind it, and closing never waits for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.devices.errors import SemphonyApiError

__all__ = ["DeviceWorker"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class _Job:
    label: str
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]


@dataclass(frozen=True)
class _Overdue:
    label: str
    timeout_s: float
    since: float
    future: concurrent.futures.Future[Any]


class DeviceWorker:
    """Runs blocking callables one at a time on a daemon thread; :meth:`call` awaits one with a limit."""

    def __init__(self, name: str = "openfibsem") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._overdue: _Overdue | None = None
        self._running: str | None = None

    @property
    def running(self) -> str | None:
        """The label of the call running now, if any."""
        return self._running

    @property
    def busy_overdue(self) -> str | None:
        """The label of a call still running past its limit, if any."""
        overdue = self._overdue
        return None if overdue is None else overdue.label

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # the caller gave up before the call started
            self._running = job.label
            try:
                result = job.fn()
            except BaseException as exc:  # handed to the awaiting caller, never lost
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self._running = None
            overdue = self._overdue
            if overdue is not None and overdue.future is job.future:
                self._overdue = None
                log.warning(
                    "device.openfibsem_overdue_call_finished",
                    extra={"call": job.label, "after_s": round(time.monotonic() - overdue.since, 1)},
                )

    async def call(self, label: str, fn: Callable[[], _T], *, timeout_s: float) -> _T:
        """Run ``fn()`` on the worker and return its result; its exception propagates.

        Raises :class:`SemphonyApiError` 504 when it does not finish within ``timeout_s`` (the call goes on
        running on the instrument side and is logged when it ends), 503 while an earlier call is still running
        past its limit, and 503 once the worker is closed.
        """
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise SemphonyApiError("the OpenFIBSEM connection is closed", status_code=503)
            overdue = self._overdue
            if overdue is not None:
                raise SemphonyApiError(
                    f"OpenFIBSEM is still busy with {overdue.label}, which did not finish within "
                    f"{overdue.timeout_s:g} s; {label} was not sent",
                    status_code=503,
                )
            self._start_locked()
            self._queue.put(_Job(label, fn, future))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            # wait_for cancelled the future; that only fails when the call had already started.
            if not future.cancelled():
                with self._lock:
                    if self._overdue is None and not future.done():
                        self._overdue = _Overdue(label, timeout_s, time.monotonic(), future)
            raise SemphonyApiError(
                f"OpenFIBSEM {label} did not finish within {timeout_s:g} s", status_code=504
            ) from None

    def close(self) -> None:
        """Refuse further calls and let the thread end after the call in progress (never waits for it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)
