"""Runs the async device backend behind the synchronous Semphony SDK, on a private event-loop thread.

Why a private loop: the SDK's API is synchronous (as in the Semphony reference), the backends are async, and
the agent's own event loop must never block on a device that may take minutes (a pump-down). Async callers use
``await asyncio.to_thread(device.stage.move_to, x, y)``; calling a blocking SDK method directly from a running
event loop is refused with a clear error instead of silently freezing that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

_T = TypeVar("_T")


class LoopThread:
    """A daemon thread running one event loop; :meth:`run` executes a coroutine there and waits for it."""

    def __init__(self, name: str = "semphony-sdk") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
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
        """Run ``coro`` on the private loop and return its result (its exception propagates)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "blocking Semphony SDK call from a running event loop; use `await asyncio.to_thread(...)`"
            )
        loop = self._ensure()
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self, final: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``final`` (e.g. closing connections) then stop the loop and join the thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        if final is not None:
            asyncio.run_coroutine_threadsafe(final, loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
