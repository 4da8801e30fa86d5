"""`agent.config.update` through the real stream changes the running daemon: log level and status period."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from agent.commands.run_cmd import compose
from agent.settings import load_settings
from testbed.backend import BackendServer


async def test_config_update_reaches_the_daemon(tmp_path: Path) -> None:
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
                "backend": {"url": backend.url, "heartbeat_interval_s": 30.0},
                "ingest": {"watch_dir": str(watch)},
            },
        )
        comp = compose(settings)
        task = asyncio.create_task(comp.daemon.run())
        try:
            iid = await asyncio.to_thread(
                backend.create_instruction,
                session,
                "agent.config.update",
                {"log_level": "DEBUG", "status_interval_s": 2.0, "heartbeat_interval_s": 7.0},
            )
            bad = await asyncio.to_thread(
                backend.create_instruction, session, "agent.config.update", {"not_a_key": 1}
            )
            rows: dict[str, dict[str, object]] = {}
            for _ in range(200):
                rows = {
                    r["instruction_id"]: r for r in await asyncio.to_thread(backend.instructions, session)
                }
                if all(rows.get(i, {}).get("ack_status") for i in (iid, bad)):
                    break
                await asyncio.sleep(0.05)
            assert rows[iid]["ack_status"] == "processed"
            assert rows[bad]["ack_status"] == "declined"
            assert root.level == logging.DEBUG
            assert comp.daemon.status_interval_s == 2.0
            heartbeat = next(p.service for p in comp.daemon.services if p.name == "heartbeat")
            assert heartbeat.interval == 7.0  # type: ignore[attr-defined]
        finally:
            comp.daemon.request_stop("test")
            assert await task == 0
            await comp.close()
            root.setLevel(level_before)
