"""End-to-end ingest against the testbed backend (both compat modes), real watchdog, real files.

Each test ends by comparing the backend with the generator's manifest: every entity exactly once, under its
deterministic uuid, with the field values the files carry (near-grid-bar holes filtered, as SmartEM does).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.ingest import IngestConfig, IngestService
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from testbed.backend.options import Compat
from testbed.backend.server import BackendServer
from testbed.epu import Manifest, generate
from tests.integration.test_ingest_support import agent_command, agent_env, backend_problems, run_agent_once

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("compat", ["strict", "smartem"])]


def _client(url: str) -> AsyncSmartEMAPIClient:
    return AsyncSmartEMAPIClient(
        url, retry=RetryPolicy(attempts=2, timeout=3.0, wait_initial=0.1, wait_max=0.5)
    )


def _config(watch: Path) -> IngestConfig:
    return IngestConfig(
        watch_dir=watch,
        settle_time_s=0.1,
        flush_retry_initial_s=0.2,
        flush_retry_max_s=1.0,
        status_interval_s=5,
    )


async def _generate_in_thread(out: Path, **options: object) -> Manifest:
    result: dict[str, Manifest] = {}

    def work() -> None:
        result["m"] = generate(out, **options)  # type: ignore[arg-type]

    await asyncio.to_thread(work)
    return result["m"]


async def test_children_first_partial_writes_renames_and_duplicate_hole_images(
    tmp_path: Path, compat: Compat
) -> None:
    """The agent watches an empty folder; the visit is written in random order with partial writes."""
    out = tmp_path / "visit"
    out.mkdir()
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        db = open_database(tmp_path / "state")
        client = _client(server.url)
        service = IngestService(_config(out), db, client)
        await service.start()
        try:
            manifest = await _generate_in_thread(
                out, preset="small", seed=3, disorder=1.0, partial_writes=0.3, rename_writes=0.3
            )
            assert any(len(h.image_paths) == 2 for h in manifest.foilholes)  # duplicate foil-hole images
            assert await service.wait_until_posted(timeout_s=60, quiet_s=3), service.snapshot()
            snap = service.snapshot()
            assert snap["outbox_depth"] == 0
            assert snap["orphans"] == {}
        finally:
            await service.stop()
            await client.aclose()
            db.close()
        assert backend_problems(server.url, manifest) == []


async def test_backend_outage_of_30s_in_the_middle_of_a_burst(tmp_path: Path, compat: Compat) -> None:
    """The backend goes away while the visit is being written and comes back 30 s later: nothing is lost."""
    out = tmp_path / "visit"
    out.mkdir()
    server = BackendServer(tmp_path / "backend.db", compat=compat).start()
    db = open_database(tmp_path / "state")
    client = _client(server.url)
    service = IngestService(_config(out), db, client)
    await service.start()
    try:
        gen = asyncio.create_task(
            _generate_in_thread(out, preset="small", seed=5, disorder=0.5, timing="bursts", duration_s=6.0)
        )
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.stop)
        outage_start = time.monotonic()
        manifest = await gen
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
        snap = service.snapshot()
        assert snap["outbox_depth"] > 0  # work accumulated on disk during the outage
        assert snap["backend_available"] is False
        await asyncio.to_thread(server.start)
        assert await service.wait_until_posted(timeout_s=60, quiet_s=3), service.snapshot()
        assert service.snapshot()["backend_available"] is True
    finally:
        await service.stop()
        await client.aclose()
        db.close()
    try:
        assert backend_problems(server.url, manifest) == []
    finally:
        server.stop()


def test_state_file_deleted_then_restart_on_a_finished_session(tmp_path: Path, compat: Compat) -> None:
    """A second import with no state re-derives the same uuids: no duplicate, values unchanged.

    Two EPU sessions (two grids) under one watch root, each with its own atlas.
    """
    out = tmp_path / "visit"
    manifest = generate(out, preset="small", seed=11, disorder=0.3, grids=2)
    assert len(manifest.acquisitions) == 2
    state = tmp_path / "state"
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        run_agent_once(out, server.url, state)
        assert backend_problems(server.url, manifest) == []
        shutil.rmtree(state)
        run_agent_once(out, server.url, state)
        assert backend_problems(server.url, manifest) == []
        # And a third run with the state kept posts nothing at all.
        report = run_agent_once(out, server.url, state)
        assert '"entities_posted": {}' in report
        assert backend_problems(server.url, manifest) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_during_a_medium_session(tmp_path: Path, compat: Compat) -> None:
    """The agent daemon is SIGKILLed 5 times while a medium visit is written, restarted each time."""
    import random

    rng = random.Random(7 if compat == "strict" else 8)
    out = tmp_path / "visit"
    out.mkdir()
    state = tmp_path / "state"
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        result: dict[str, Manifest] = {}
        writer = threading.Thread(
            target=lambda: result.setdefault("m", generate(out, preset="medium", seed=2, disorder=0.2))
        )
        writer.start()
        kills = 0
        while kills < 5:
            proc = subprocess.Popen(
                agent_command(out, server.url, state),
                env=agent_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(1.5, 4.0))
            proc.kill()  # SIGKILL: no cleanup, no flush
            proc.wait()
            kills += 1
        writer.join()
        run_agent_once(out, server.url, state, timeout=240)
        assert backend_problems(server.url, result["m"]) == []
