"""Small asyncio helpers shared by the agent's long-running parts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

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
