"""``cancel_and_wait``: ends the task, never swallows the caller's own cancellation, logs a failing task."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.aio import cancel_and_wait


async def test_cancels_and_waits_for_the_task() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)


async def test_a_cancelled_caller_is_not_swallowed() -> None:
    async def slow_to_unwind() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.sleep(0.3))

    inner = asyncio.create_task(slow_to_unwind())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    with contextlib.suppress(asyncio.CancelledError):
        await inner


async def test_an_exception_on_cancel_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("broken cleanup") from None

    task = asyncio.create_task(fails_on_cancel(), name="cleanup")
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    record = next(r for r in caplog.records if r.getMessage() == "agent.task_failed")
    assert record.exc_info is not None
    assert "broken cleanup" in str(record.exc_info[1])
