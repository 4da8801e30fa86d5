"""The SDK's private event-loop bridge: closing it never leaves a caller thread waiting forever."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.devices.semphony import SemphonyApiError
from agent.devices.semphony._bridge import BridgeClosedError, LoopThread
from tests.agent.devices.conftest import hanging_client


def _call_in_thread(fn: object) -> tuple[threading.Thread, list[BaseException | object]]:
    outcome: list[BaseException | object] = []

    def target() -> None:
        try:
            outcome.append(fn())  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_stop_cancels_a_call_in_progress_and_runs_final() -> None:
    bridge = LoopThread(stop_timeout_s=5.0)
    started = threading.Event()
    finals: list[str] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def final() -> None:
        finals.append("closed")

    thread, outcome = _call_in_thread(lambda: bridge.run(forever()))
    assert started.wait(5)
    t0 = time.monotonic()
    bridge.stop(final())
    thread.join(5)
    assert not thread.is_alive(), "the caller thread still waits on a stopped loop"
    assert time.monotonic() - t0 < 3
    assert isinstance(outcome[0], BridgeClosedError)
    assert "closed while the call was in progress" in str(outcome[0])
    assert finals == ["closed"]


def test_run_after_stop_is_refused_without_leaking_the_coroutine() -> None:
    bridge = LoopThread()
    assert bridge.run(asyncio.sleep(0, result=7)) == 7
    bridge.stop()
    bridge.stop()  # idempotent

    async def never_run() -> int:
        return 1

    with pytest.raises(BridgeClosedError, match="closed"):
        bridge.run(never_run())


def test_client_close_interrupts_a_hanging_device_request() -> None:
    client, entered = hanging_client()
    thread, outcome = _call_in_thread(lambda: client.invoke_capability(1, 1, "stage.move_to", {"x": 1}))
    assert entered.wait(5)
    client.close()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome[0], SemphonyApiError)
    assert "closed while the call was in progress" in str(outcome[0])
