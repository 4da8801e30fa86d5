"""`agent.config.update` through the real stream changes the running daemon: log level, status period and
heartbeat, each reported as changed only once it has taken effect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app import Composition, compose
from agent.heartbeat import AdjustableHeartbeat
from agent.settings import load_settings
from testbed.backend import BackendServer


@dataclass
class Running:
    """A composed daemon running against a testbed backend."""

    backend: BackendServer
    session: str
    comp: Composition

    async def run(self, itype: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Issue one instruction from the backend side and wait for its acknowledgement row."""
        iid = await asyncio.to_thread(self.backend.create_instruction, self.session, itype, payload)
        for _ in range(200):
            rows = await asyncio.to_thread(self.backend.instructions, self.session)
            row = next((r for r in rows if r["instruction_id"] == iid), None)
            if row is not None and row.get("ack_status"):
                return row
            await asyncio.sleep(0.05)
        raise AssertionError(f"{itype} was not acknowledged")

    def heartbeat(self) -> AdjustableHeartbeat:
        """The daemon's heartbeat service."""
        service = next(p.service for p in self.comp.daemon.services if p.name == "heartbeat")
        assert isinstance(service, AdjustableHeartbeat)
        return service

    async def beats_received(self) -> int:
        """Heartbeats the backend has recorded for the session (the backend's own count, not the agent's)."""
        async with httpx.AsyncClient(base_url=self.backend.url) as http:
            resp = await http.get("/testbed/heartbeats", params={"session_id": self.session})
        resp.raise_for_status()
        return len(resp.json())


def result_of(row: dict[str, Any]) -> dict[str, Any]:
    """The accepted acknowledgement's result (SmartEM stores it as a JSON string)."""
    accepted = [a for a in row.get("acknowledgements", []) if a.get("outcome") == "accepted"]
    assert accepted, row
    result: dict[str, Any] = json.loads(accepted[-1]["result"])
    return result


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, *, heartbeat_interval_s: float) -> AsyncIterator[Running]:
    """``compose()``'s daemon running against a testbed backend; its status period is 30 s."""
    root = logging.getLogger()
    level_before = root.level
    watch = tmp_path / "epu"
    watch.mkdir()
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        session = backend.create_session("cfg-agent")
        settings = load_settings(
            None,
            {
                "agent_id": "cfg-agent",
                "session_id": session,
                "state_dir": str(tmp_path / "state"),
                "backend": {"url": backend.url, "heartbeat_interval_s": heartbeat_interval_s},
                "ingest": {"watch_dir": str(watch)},
                "logging": {"status_interval_s": 30.0},
            },
        )
        comp = compose(settings)
        task = asyncio.create_task(comp.daemon.run())
        try:
            yield Running(backend, session, comp)
        finally:
            comp.daemon.request_stop("test")
            assert await task == 0
            await comp.close()
            root.setLevel(level_before)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with daemon(tmp_path, heartbeat_interval_s=30.0) as running:
        yield running


async def wait_for_beats(running: Running, more_than: int, within_s: float = 10.0) -> int:
    """Wait until the backend has recorded more than ``more_than`` heartbeats; returns the count."""
    deadline = time.monotonic() + within_s
    while (count := await running.beats_received()) <= more_than:
        assert time.monotonic() < deadline, f"no more than {more_than} heartbeats after {within_s} s"
        await asyncio.sleep(0.1)
    return count


async def test_config_update_reaches_the_daemon(running: Running) -> None:
    row = await running.run(
        "agent.config.update", {"log_level": "DEBUG", "status_interval_s": 2.0, "heartbeat_interval_s": 7.0}
    )
    assert row["ack_status"] == "processed"
    assert result_of(row)["changed"] == {
        "log_level": "DEBUG",
        "status_interval_s": 2.0,
        "heartbeat_interval_s": 7.0,
    }
    bad = await running.run("agent.config.update", {"not_a_key": 1})
    assert bad["ack_status"] == "declined"
    assert logging.getLogger().level == logging.DEBUG
    assert running.comp.daemon.status_interval_s == 2.0
    assert running.heartbeat().interval == 7.0
    assert running.heartbeat().running


async def test_heartbeat_period_zero_stops_the_beats_and_a_period_restarts_them(tmp_path: Path) -> None:
    async with daemon(tmp_path, heartbeat_interval_s=0.2) as running:
        await wait_for_beats(running, more_than=2)
        row = await running.run("agent.config.update", {"heartbeat_interval_s": 0})
        assert row["ack_status"] == "processed"
        assert result_of(row)["changed"] == {"heartbeat_interval_s": 0.0}
        assert not running.heartbeat().running
        await asyncio.sleep(0.3)  # a beat already on the wire when the sender stopped may still land
        stopped_at = await running.beats_received()
        await asyncio.sleep(1.5)  # seven periods of the old 0.2 s
        assert await running.beats_received() == stopped_at, (
            "heartbeats went on after heartbeat_interval_s: 0"
        )

        row = await running.run("agent.config.update", {"heartbeat_interval_s": 0.2})
        assert row["ack_status"] == "processed"
        assert running.heartbeat().running
        await wait_for_beats(running, more_than=stopped_at)


async def test_a_heartbeat_can_be_turned_on_in_an_agent_started_without_one(tmp_path: Path) -> None:
    async with daemon(tmp_path, heartbeat_interval_s=0) as running:
        assert not running.heartbeat().running
        row = await running.run("agent.config.update", {"heartbeat_interval_s": 0.2})
        assert row["ack_status"] == "processed"
        assert result_of(row)["changed"] == {"heartbeat_interval_s": 0.2}
        await wait_for_beats(running, more_than=0)


async def test_a_shorter_heartbeat_period_takes_effect_at_once(running: Running) -> None:
    # From 30 s to 0.2 s: the new period counts from the change, not after the rest of the old 30 s sleep.
    row = await running.run("agent.config.update", {"heartbeat_interval_s": 0.2})
    assert row["ack_status"] == "processed"
    await wait_for_beats(running, more_than=2, within_s=5.0)


async def test_a_shorter_status_period_takes_effect_at_once(running: Running) -> None:
    lines: list[float] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "agent.status":
                lines.append(time.monotonic())

    recorder = Recorder(level=logging.INFO)
    daemon_log = logging.getLogger("agent.daemon")
    level_before = daemon_log.level
    daemon_log.setLevel(logging.INFO)  # the root level under pytest may hide INFO lines
    daemon_log.addHandler(recorder)
    try:
        row = await running.run("agent.config.update", {"status_interval_s": 1.0})
        assert row["ack_status"] == "processed"
        changed_at = time.monotonic()
        # The daemon is a few seconds into a 30 s wait: the next lines must not wait it out.
        deadline = changed_at + 5.0
        while len(lines) < 2:
            assert time.monotonic() < deadline, f"status lines after the change: {len(lines)}"
            await asyncio.sleep(0.1)
    finally:
        daemon_log.removeHandler(recorder)
        daemon_log.setLevel(level_before)
