"""Small asyncio helpers shared by the agent's long-running parts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "run_unsuspended"]

_T = TypeVar("_T")

log = logging.getLogger("agent")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended.

    Unlike ``task.cancel(); with suppress(CancelledError): await task``, this never swallows a cancellation
    aimed at the caller: a stop that is itself cancelled (a shutdown bound) still ends, and a task that was
    awaiting another one it cancelled cannot mistake its own cancellation for the other's. An exception the task
    ended with (instead of being cancelled) is logged rather than lost.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("agent.task_failed", exc_info=exc, extra={"task": task.get_name()})


def run_unsuspended(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (it awaits only synchronous operations) and return its result.

    The ROI and autofocus algorithms are written once, as coroutines, so that the daemon awaits device I/O on its
    own loop; their synchronous entry points (benches, scripts, the training tools) run the same coroutines over
    synchronous operations with this, without an event loop or a thread. A coroutine that does suspend is a
    programming error: it is closed and reported.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    coro.close()
    raise RuntimeError("run_unsuspended: the coroutine suspended; await it on an event loop instead")
