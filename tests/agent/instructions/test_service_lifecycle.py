"""The instruction service's stream lifecycle: a stop always ends the stream, even mid-resync."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.instructions.config import ExecutorConfig
from agent.instructions.context import HandlerContext
from agent.instructions.journal import AckAttempt
from agent.instructions.service import InstructionService
from agent.state.database import Database, open_database


class SlowToUnwindStream:
    """Streams until cancelled, then takes a moment to close its connection (like a real HTTP stream)."""

    def __init__(self) -> None:
        self.opened = 0
        self.connected = asyncio.Event()

    async def stream_instructions_async(
        self,
        instruction_callback: Callable[[Any], None],
        connection_callback: Callable[[Any], None] | None = None,
        error_callback: Callable[[Exception], None] | None = None,
        auto_retry: bool = True,
    ) -> None:
        self.opened += 1
        self.connected.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.sleep(0.2))


class NoAcks:
    async def send_ack(self, ack: AckAttempt) -> None:
        raise AssertionError("no instruction was received")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path)
    yield database
    database.close()


async def test_stop_during_a_resync_ends_the_stream(db: Database, tmp_path: Path) -> None:
    stream = SlowToUnwindStream()
    service = InstructionService(
        ExecutorConfig(resync_interval_s=0.01), db, stream, NoAcks(), HandlerContext(state_dir=tmp_path)
    )
    await service.start()
    await asyncio.wait_for(stream.connected.wait(), 5)
    service.request_resync()  # the old stream is now unwinding (0.2 s)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    # A bound only to keep a regression from hanging the suite (the old code swallowed this cancellation too
    # and returned after the bound, having re-opened the stream).
    await asyncio.wait_for(service.stop(), 5)
    assert time.monotonic() - started < 2.0
    await asyncio.sleep(0.5)
    assert stream.opened == 1, "the stream was re-opened after the stop"
    assert service.sse_state == "stopped"
