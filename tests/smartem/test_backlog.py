"""Backlogs imported into the real SmartEM backend by ``em-agent ingest --once`` (a subprocess with OAuth client
credentials from the OIDC stand-in): generated sessions, every sample folder with an ``EpuSession.dm``, partial
folders (issue 13's checks), a second import that must create nothing, and the entity events the backend's own
RabbitMQ consumer receives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.ingest.identity import EntityKind, entity_uuid
from testbed.epu import generate
from testbed.smartem_real import RealSmartEM
from tests.integration.test_ingest_support import run_agent_once
from tests.integration.test_partial_support import (
    SMARTEM_EXAMPLE,
    check_images_disc_only_folder,
    check_smartem_test_folder,
    folder_expectation,
    ingest_once,
    tree_problems,
)
from tests.smartem.support import (
    agent_oauth_env,
    consumer_events,
    manifest_problems,
    reader_auth,
    row_counts,
    wait_for_consumer,
)

pytestmark = [pytest.mark.smartem, pytest.mark.integration]


def _report(stdout: str) -> dict[str, object]:
    report: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return report


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("preset", "seed", "reingest"), [("small", 1, True), ("medium", 2, False)])
def test_generated_backlog_arrives_complete(
    smartem: RealSmartEM, tmp_path: Path, preset: str, seed: int, reingest: bool
) -> None:
    manifest = generate(tmp_path / "visit", preset=preset, seed=seed, disorder=0.2)
    env = agent_oauth_env(smartem)
    events_before = consumer_events(smartem)
    report = _report(run_agent_once(tmp_path / "visit", smartem.base_url, tmp_path / "state", 600, env=env))
    assert report["not_posted"] == [], report
    assert report["last_error"] is None, report
    assert manifest_problems(smartem, manifest) == []

    # The backend's consumer got one event for every created entity it publishes one for.
    wait_for_consumer(smartem)
    events = consumer_events(smartem) - events_before
    for acq in manifest.acquisition_keys():
        assert events[("acquisition.created", entity_uuid(acq, EntityKind.ACQUISITION, acq))] == 1
    for mic in manifest.micrographs:
        key = (
            "micrograph.created",
            entity_uuid(mic.acquisition_key, EntityKind.MICROGRAPH, mic.micrograph_id),
        )
        assert events[key] == 1, key
    squares = {
        entity_uuid(s.acquisition_key, EntityKind.GRIDSQUARE, s.gridsquare_id) for s in manifest.gridsquares
    }
    square_events = {
        uuid for (kind, uuid) in events if kind.startswith("gridsquare") and kind.endswith(".created")
    }
    assert squares <= square_events

    if not reingest:
        # On the medium session a re-import costs about 110 s against 30 s for the first (every create is a 500
        # on SmartEM, then a GET and a PUT): the small one proves the same thing.
        return
    # Re-ingest with a fresh state folder: the deterministic uuids make every entity known; nothing new is created.
    before = row_counts(smartem)
    report = _report(run_agent_once(tmp_path / "visit", smartem.base_url, tmp_path / "state2", 600, env=env))
    assert report["not_posted"] == [], report
    assert row_counts(smartem) == before
    assert manifest_problems(smartem, manifest) == []


def _sample_sessions(samples: Path) -> list[Path]:
    return sorted(p.parent for p in samples.rglob("EpuSession.dm"))


def test_every_sample_session_arrives_complete(
    smartem: RealSmartEM, epu_samples_dir: Path, tmp_path: Path
) -> None:
    sessions = _sample_sessions(epu_samples_dir)
    assert len(sessions) >= 3, sessions
    env = agent_oauth_env(smartem)
    auth = reader_auth(smartem)
    for n, session in enumerate(sessions):
        smartem.reset_data()
        report = ingest_once(session, smartem.base_url, tmp_path / f"state{n}", env=env)
        where = session.relative_to(epu_samples_dir)
        assert report["not_posted"] == [], (where, report)
        expected = folder_expectation(session, session)
        assert tree_problems(smartem.base_url, expected, auth=auth) == [], where
        # What the agent says it created is exactly what the backend's tables hold.
        created = {kind: v["created"] for kind, v in report["datastore"]["entities"].items()}  # type: ignore[index]
        counts = row_counts(smartem)
        for kind, n_created in created.items():
            if kind == "atlas_tile":
                # The atlas create carries every tile; the agent's tile entities are the square-position links,
                # only for tiles with squares on them.
                assert counts[kind] >= n_created, (where, counts, created)
            else:
                assert counts[kind] == n_created, (where, kind, counts, created)


def test_smartem_test_folder_ingests_completely(
    smartem: RealSmartEM, epu_samples_dir: Path, tmp_path: Path
) -> None:
    check_smartem_test_folder(
        smartem.base_url,
        epu_samples_dir,
        tmp_path / "state",
        auth=reader_auth(smartem),
        env=agent_oauth_env(smartem),
    )


def test_images_disc_only_folder_ingests_and_completes(
    smartem: RealSmartEM, epu_samples_dir: Path, tmp_path: Path
) -> None:
    check_images_disc_only_folder(
        smartem.base_url,
        epu_samples_dir / SMARTEM_EXAMPLE,
        tmp_path,
        auth=reader_auth(smartem),
        env=agent_oauth_env(smartem),
    )
