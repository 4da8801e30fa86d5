"""Partial and archived EPU folders reach the backend in full: parents built from what the paths say.

The checks live in :mod:`tests.integration.test_partial_support` and take the backend's base URL, so the same
folders can be imported into any SmartEM-compatible backend; here they run against the testbed backend (both
compat modes) through ``ingest --once`` subprocesses, and a live service shows that a parent built from the
paths is completed by an update when its own file comes later.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from agent.ingest import IngestConfig, IngestService
from agent.ingest.store import SYNTHESIZED_COMPLETED
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from testbed.backend.options import Compat
from testbed.backend.server import BackendServer
from testbed.epu import generate
from tests.integration.test_ingest_support import backend_problems
from tests.integration.test_partial_support import (
    SMARTEM_EXAMPLE,
    check_images_disc_only_folder,
    check_smartem_test_folder,
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("compat", ["strict", "smartem"])]


def test_smartem_test_folder_ingests_completely(
    tmp_path: Path, epu_samples_dir: Path, compat: Compat
) -> None:
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        check_smartem_test_folder(server.url, epu_samples_dir, tmp_path / "state")


def test_images_disc_only_folder_of_the_smartem_test_folder(
    tmp_path: Path, epu_samples_dir: Path, compat: Compat
) -> None:
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        check_images_disc_only_folder(server.url, epu_samples_dir / SMARTEM_EXAMPLE, tmp_path)


def test_images_disc_only_folder_of_a_generated_session(tmp_path: Path, compat: Compat) -> None:
    manifest = generate(tmp_path / "visit", preset="small", seed=5, previews=False)
    (session,) = {tmp_path / "visit" / a.acquisition_key for a in manifest.acquisitions}
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        check_images_disc_only_folder(server.url, session, tmp_path)


async def test_live_parent_built_after_the_bound_is_completed_by_its_file(
    tmp_path: Path, compat: Compat, caplog: pytest.LogCaptureFixture
) -> None:
    """Micrographs arrive alone; after ``parent_wait_s`` their holes, squares, grid and acquisition are built and
    everything is posted. Then the rest of the session arrives and completes those same entities by updates:
    the backend ends with exactly the manifest's entities and field values, nothing duplicated."""
    staging, watch = tmp_path / "staging", tmp_path / "watch"
    manifest = generate(staging, preset="small", seed=4, previews=False)
    watch.mkdir()
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    first = [p for p in files if p.parent.name == "Data" and "_Fractions" not in p.name]
    rest = [p for p in files if p not in first]

    def copy(paths: list[Path]) -> None:
        for path in paths:
            target = watch / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)

    config = IngestConfig(
        watch_dir=watch,
        settle_time_s=0.1,
        parent_wait_s=1.0,
        flush_retry_initial_s=0.2,
        flush_retry_max_s=1.0,
        status_interval_s=5,
    )
    caplog.set_level(logging.INFO, logger="agent.ingest.service")
    with BackendServer(tmp_path / "backend.db", compat=compat) as server:
        db = open_database(tmp_path / "state")
        client = AsyncSmartEMAPIClient(
            server.url, retry=RetryPolicy(attempts=2, timeout=3.0, wait_initial=0.1, wait_max=0.5)
        )
        service = IngestService(config, db, client)
        await service.start()
        try:
            await asyncio.to_thread(copy, first)
            assert await service.wait_until_posted(timeout_s=60, quiet_s=3), service.snapshot()
            snap = service.snapshot()
            assert snap["parents_synthesized"]["acquisition"] == 1, snap
            assert snap["parents_synthesized"]["grid"] == 1
            holes = {m.foilhole_id for m in manifest.micrographs}
            squares = {m.gridsquare_id for m in manifest.micrographs}
            assert snap["parents_synthesized"]["foilhole"] == len(holes)
            assert snap["parents_synthesized"]["gridsquare"] == len(squares)
            posted = snap["entities_posted"]
            assert posted["micrograph"] == len(manifest.micrographs)
            built = [r for r in caplog.records if getattr(r, "event", None) == "ingest.parent_synthesized"]
            # Logged once each (by kind and natural id), as many as the status line counts.
            keys = [(r.kind, r.natural_id) for r in built]  # type: ignore[attr-defined]
            assert len(keys) == len(set(keys)) == sum(snap["parents_synthesized"].values())

            await asyncio.to_thread(copy, rest)
            assert await service.wait_until_posted(timeout_s=60, quiet_s=3), service.snapshot()
            snap = service.snapshot()
            assert snap["parents_completed"] == snap["parents_synthesized"], snap
        finally:
            await service.stop()
            await client.aclose()
        with db.read() as conn:
            waiting = conn.execute(
                "SELECT COUNT(*) FROM ingest_entities WHERE synthesized > 0 AND synthesized != ?",
                (SYNTHESIZED_COMPLETED,),
            ).fetchone()[0]
        db.close()
        assert waiting == 0
        assert backend_problems(server.url, manifest) == []
