"""Runs the async device backend behind the synchronous Semphony SDK, on a private event-loop thread.

Why a private loop: the SDK's API is synchronous (as in the Semphony reference) for scripts and notebooks, the
backends are async, and a notebook already runs an event loop of its own that a blocking call must not re-enter.
The daemon never comes here: it awaits the asynchronous facade (:mod:`agent.devices.microscope`) on its own
loop. Calling a blocking SDK method directly from a running event loop is refused with a clear error instead of
silently freezing that loop.

Stopping cancels the calls still in progress before the loop stops: a caller thread blocked in :meth:`run`
must get an error, not wait forever on a loop that no longer runs (which would also hang interpreter shutdown,
since ``asyncio.run`` joins the ``to_thread`` workers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BridgeClosedError", "LoopThread"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class BridgeClosedError(RuntimeError):
    """The private loop was stopped before (or while) the call ran."""


class LoopThread:
    """A daemon thread running one event loop; :meth:`run` executes a coroutine there and waits for it."""

    def __init__(self, name: str = "semphony-sdk", stop_timeout_s: float = 10.0) -> None:
        self._name = name
        self._stop_timeout_s = stop_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _ensure_locked(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=_main, name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
        return self._loop

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the private loop and return its result (its exception propagates).

        Raises :class:`BridgeClosedError` when the bridge is stopped before or during the call.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "blocking Semphony SDK call from a running event loop: await the device facade "
                "(agent.devices.microscope), or use `await asyncio.to_thread(...)`"
            )
        # Scheduling under the lock: a concurrent stop() then sees (and cancels) this call's task.
        with self._lock:
            if self._stopped:
                coro.close()
                raise BridgeClosedError("the device connection is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._ensure_locked())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BridgeClosedError(
                "the device connection was closed while the call was in progress"
            ) from None

    def stop(self, final: Coroutine[Any, Any, Any] | None = None) -> None:
        """Cancel calls in progress, run ``final`` (e.g. closing connections), stop the loop and join the
        thread (idempotent; each step bounded by ``stop_timeout_s``)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._stopped = True
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(_wind_down(final), loop).result(self._stop_timeout_s)
        except TimeoutError:
            log.warning("device.bridge_stop_timeout", extra={"timeout_s": self._stop_timeout_s})
        except Exception:
            log.exception("device.bridge_close_failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._stop_timeout_s)
        if thread.is_alive():
            # A coroutine blocked the loop itself; leave the daemon thread rather than hang the caller.
            log.warning("device.bridge_thread_stuck", extra={"thread": self._name})
            return
        loop.close()


async def _wind_down(final: Coroutine[Any, Any, Any] | None) -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    if final is not None:
        await final
