"""``DeviceHandle``: serial device calls, and a close that a hung device call cannot hold up."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.devices.semphony import SemphonyApiError, SemphonyClient
from agent.instructions.context import DeviceHandle
from tests.agent.devices.conftest import hanging_client


async def test_close_runs_closer_then_release_in_order() -> None:
    events: list[str] = []
    handle: DeviceHandle[str] = DeviceHandle(
        lambda: "device", lambda d: events.append(f"closer:{d}"), release=lambda: events.append("release")
    )
    assert await handle.run(lambda d: d.upper()) == "DEVICE"
    await asyncio.to_thread(handle.close)
    assert events == ["closer:device", "release"]


def test_release_runs_even_when_the_device_was_never_opened() -> None:
    released: list[int] = []
    handle: DeviceHandle[str] = DeviceHandle(lambda: "device", release=lambda: released.append(1))
    handle.close()
    assert released == [1]


async def test_a_hung_device_call_does_not_hold_up_close() -> None:
    client, entered = hanging_client()
    closed: list[str] = []
    handle: DeviceHandle[SemphonyClient] = DeviceHandle(
        lambda: client, lambda c: closed.append("session"), release=client.close, close_timeout_s=0.5
    )
    call = asyncio.create_task(handle.run(lambda c: c.invoke_capability(1, 1, "stage.move_to", {"x": 1})))
    assert await asyncio.to_thread(entered.wait, 5)
    started = time.monotonic()
    await asyncio.to_thread(handle.close)
    assert time.monotonic() - started < 3
    with pytest.raises(SemphonyApiError, match="closed while the call was in progress"):
        await asyncio.wait_for(call, 5)
