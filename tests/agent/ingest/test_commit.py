"""IngestStore.commit: one batch of processed files is one unit of work (records, atlas join, entities, outbox)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.ingest.atlas import norm_path
from agent.ingest.entities import ContributionBuilder
from agent.ingest.identity import EntityKind
from agent.ingest.parsing import ParseJob, parse_job
from agent.ingest.records import FileRecord, Outcome
from agent.ingest.store import IngestStore
from agent.state.database import open_database
from testbed.epu import generate

_TABLES = ("ingest_files", "ingest_entities", "ingest_contributions", "ingest_outbox", "ingest_atlas_claims")


def _session(tmp_path: Path) -> tuple[Path, list[Outcome], ContributionBuilder]:
    root = tmp_path / "visit"
    generate(root, preset="small", seed=1, grids=1, previews=False)
    builder = ContributionBuilder(root)
    outcomes = [
        parse_job(ParseJob(str(path), None), builder, None, 1 << 24)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in {".dm", ".xml"}
    ]
    return root, [o for o in outcomes if o.record is not None], builder


def _counts(store: IngestStore) -> dict[str, int]:
    with store.db.read() as conn:
        return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in _TABLES}


def test_a_commit_writes_files_entities_and_outbox_together(tmp_path: Path) -> None:
    _, outcomes, builder = _session(tmp_path)
    store = IngestStore(open_database(tmp_path / "state.db"))
    result = store.commit(outcomes, builder.renderer, time.time())
    counts = _counts(store)
    assert counts["ingest_files"] == len(outcomes)
    assert result.enqueued == counts["ingest_outbox"] > 0
    assert store.entity_counts()[EntityKind.MICROGRAPH.value]["known"] > 0


def test_a_failure_inside_a_commit_leaves_nothing_half_written(tmp_path: Path) -> None:
    _, outcomes, builder = _session(tmp_path)
    store = IngestStore(open_database(tmp_path / "state.db"))

    def render(kind: EntityKind, merged: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if kind is EntityKind.MICROGRAPH:  # after the files, the parents and the atlas claim were written
            raise RuntimeError("render failed")
        return builder.render(kind, merged)

    with pytest.raises(RuntimeError, match="render failed"):
        store.commit(outcomes, render, time.time())
    assert _counts(store) == dict.fromkeys(_TABLES, 0)
    # The same batch goes through once the cause is gone: nothing was left to conflict with.
    assert store.commit(outcomes, builder.renderer, time.time()).enqueued > 0


def test_the_atlas_joins_its_session_in_either_order(tmp_path: Path) -> None:
    _, outcomes, builder = _session(tmp_path)
    session = next(o for o in outcomes if o.atlas_claim is not None)
    assert session.atlas_claim is not None
    atlas = next(o for o in outcomes if o.atlas is not None and norm_path(o.path) == session.atlas_claim[1])
    for order in ((session, atlas), (atlas, session)):
        store = IngestStore(open_database(tmp_path / f"{order[0].path == atlas.path}.db"))
        for outcome in order:
            store.commit([outcome], builder.renderer, time.time())
        known = store.entity_counts()
        assert known[EntityKind.ATLAS.value]["known"] == 1
        assert known[EntityKind.ATLAS_TILE.value]["known"] >= 1


def test_a_claimed_atlas_nobody_read_is_returned_to_fetch(tmp_path: Path) -> None:
    _, outcomes, builder = _session(tmp_path)
    session = next(o for o in outcomes if o.atlas_claim is not None)
    assert session.atlas_claim is not None
    store = IngestStore(open_database(tmp_path / "state.db"))
    result = store.commit([session], builder.renderer, time.time())
    assert result.fetch == [session.atlas_claim[1]]
    # A file record alone (an unchanged or failed file) commits without contributions.
    record = FileRecord("/x/y.xml", "micrograph", 1, 1, "h", "failed", "bad")
    assert (
        store.commit([Outcome(path="/x/y.xml", record=record)], builder.renderer, time.time()).enqueued == 0
    )
