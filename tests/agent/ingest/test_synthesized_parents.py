"""Parents built from what the path says: chain up to the acquisition, the bound, completion, migration."""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from agent.commands import ingest_cmd
from agent.ingest.entities import ContributionBuilder
from agent.ingest.identity import EntityKind, entity_uuid
from agent.ingest.store import (
    NOT_SYNTHESIZED,
    SCHEMA_VERSION,
    SYNTHESIZED_COMPLETED,
    SYNTHESIZED_WAITING,
    Contribution,
    IngestStore,
)
from agent.state.database import open_database
from converters.models import FoilHoleData, MicrographData
from converters.paths import EpuFileKind
from tests.integration.test_partial_support import SMARTEM_EXAMPLE

# The ingest tables as agents before synthesized parents wrote them (schema v1).
_V1_ENTITIES = """
CREATE TABLE ingest_entities (
    uuid TEXT PRIMARY KEY, kind TEXT NOT NULL, acquisition_key TEXT NOT NULL, natural_id TEXT NOT NULL,
    parent_uuid TEXT, payload TEXT NOT NULL, payload_hash TEXT NOT NULL, confirmed_hash TEXT,
    created INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0, ready INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL, updated_at REAL NOT NULL
)
"""


def _micrograph(builder: ContributionBuilder, session: Path) -> list[Contribution]:
    mic = MicrographData(
        micrograph_id="FoilHole_101_Data_1_2_20250101_120000",
        foilhole_id="101",
        gridsquare_id="55",
        session_root=str(session),
    )
    # The fields a parsed micrograph XML contributes (its path gave the hole and the square).
    return builder._micrograph(
        mic, EpuFileKind.MICROGRAPH, mic.model_dump(mode="json", exclude_none=True), True
    )


def _apply(
    store: IngestStore, builder: ContributionBuilder, contributions: list[Contribution]
) -> list[Contribution]:
    with store.db.transaction() as conn:
        return IngestStore.apply_contributions(conn, contributions, time.time(), builder.renderer).completed


def _marks(store: IngestStore) -> dict[str, int]:
    with store.db.read() as conn:
        return {str(k): int(v) for k, v in conn.execute("SELECT kind, synthesized FROM ingest_entities")}


def test_missing_parents_are_built_up_to_the_acquisition_and_marked(tmp_path: Path) -> None:
    session = tmp_path / "watch" / "archived_visit"
    builder = ContributionBuilder(tmp_path / "watch")
    store = IngestStore(open_database(tmp_path / "state"))
    _apply(store, builder, _micrograph(builder, session))
    assert store.orphans()["by_kind"] == {"micrograph": 1}

    # Within the bound nothing is built: the parent's own file may still come.
    assert (
        store.synthesize_parents(time.time() - 60, builder.parent_builder, builder.renderer, time.time())
        == []
    )
    made = store.synthesize_parents(time.time(), builder.parent_builder, builder.renderer, time.time())
    assert [c.kind for c in made] == [
        EntityKind.FOILHOLE,
        EntityKind.GRIDSQUARE,
        EntityKind.GRID,
        EntityKind.ACQUISITION,
    ]
    acq = "archived_visit"
    assert {c.uuid for c in made} == {
        entity_uuid(acq, EntityKind.FOILHOLE, "101"),
        entity_uuid(acq, EntityKind.GRIDSQUARE, "55"),
        entity_uuid(acq, EntityKind.GRID, acq),
        entity_uuid(acq, EntityKind.ACQUISITION, acq),
    }
    assert store.orphans()["total"] == 0
    assert _marks(store) == {
        "micrograph": NOT_SYNTHESIZED,
        "foilhole": SYNTHESIZED_WAITING,
        "gridsquare": SYNTHESIZED_WAITING,
        "grid": SYNTHESIZED_WAITING,
        "acquisition": SYNTHESIZED_WAITING,
    }
    assert store.synthesized_counts()["foilhole"] == {"synthesized": 1, "completed": 0}
    # The chain goes out parents first, the acquisition named after its folder.
    items = store.sendable(10, time.time())
    assert [i.kind for i in items] == [EntityKind.ACQUISITION]
    assert items[0].payload["name"] == "archived_visit"
    # Nothing is built twice.
    assert store.synthesize_parents(time.time(), builder.parent_builder, builder.renderer, time.time()) == []


def test_the_parents_own_file_completes_the_same_entity_by_an_update(tmp_path: Path) -> None:
    session = tmp_path / "watch"
    builder = ContributionBuilder(session)
    store = IngestStore(open_database(tmp_path / "state"))
    _apply(store, builder, _micrograph(builder, session))
    store.synthesize_parents(time.time(), builder.parent_builder, builder.renderer, time.time())
    # The backend confirms the whole chain.
    while items := store.sendable(10, time.time()):
        store.confirm(items, time.time())
    assert store.outbox_depth() == 0

    hole = FoilHoleData(foilhole_id="101", gridsquare_id="55", session_root=str(session), width_px=40.0)
    real = builder._hole(".", hole, EpuFileKind.GRIDSQUARE_METADATA, {"width_px": 40.0})
    completed = _apply(store, builder, [real])
    assert [c.uuid for c in completed] == [entity_uuid(".", EntityKind.FOILHOLE, "101")]
    assert _marks(store)["foilhole"] == SYNTHESIZED_COMPLETED
    (item,) = store.sendable(10, time.time())
    assert item.uuid == real.uuid
    assert item.created  # an update of the entity the backend holds, never a second create
    assert item.payload["diameter"] == 40
    assert store.entity_counts()["foilhole"]["known"] == 1
    assert store.synthesized_counts()["foilhole"] == {"synthesized": 1, "completed": 1}


def test_a_micrograph_outside_a_grid_square_folder_keeps_waiting(tmp_path: Path) -> None:
    builder = ContributionBuilder(tmp_path)
    store = IngestStore(open_database(tmp_path / "state"))
    mic = MicrographData(
        micrograph_id="FoilHole_7_Data_1_2_20250101_120000", foilhole_id="7", session_root=str(tmp_path)
    )
    fields = mic.model_dump(mode="json", exclude_none=True)
    _apply(store, builder, builder._micrograph(mic, EpuFileKind.MICROGRAPH, fields, True))
    assert store.synthesize_parents(time.time(), builder.parent_builder, builder.renderer, time.time()) == []
    assert store.orphans()["by_kind"] == {"micrograph": 1}


def test_a_v1_state_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "em-agent.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(_V1_ENTITIES)
    conn.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_versions VALUES('ingest', 1)")
    conn.execute(
        "INSERT INTO ingest_entities(uuid, kind, acquisition_key, natural_id, payload, payload_hash, created, "
        "ready, first_seen, updated_at) VALUES('u1', 'acquisition', '.', '.', '{}', 'h', 1, 1, 0, 0)"
    )
    conn.commit()
    conn.close()

    db = open_database(tmp_path)
    store = IngestStore(db)
    with db.read() as c:
        assert c.execute("SELECT version FROM schema_versions WHERE component='ingest'").fetchone()[0] == 2
        row = c.execute("SELECT uuid, created, synthesized FROM ingest_entities").fetchone()
    assert tuple(row) == ("u1", 1, NOT_SYNTHESIZED)  # kept, and known from its own file
    assert SCHEMA_VERSION == 2
    assert store.synthesized_counts() == {}
    db.close()
    # Opening it again is a no-op.
    db = open_database(tmp_path)
    IngestStore(db)
    db.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    ingest_cmd.register(parser.add_subparsers(dest="command"))
    return parser


def _dry_run(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    args = _parser().parse_args(
        ["ingest", str(folder), "--dry-run", "--json", "--parse-processes", "0", "--quiet-time", "1"]
    )
    code = args.func(args)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_dry_run_of_an_images_disc_only_folder_reports_what_it_lacked(
    tmp_path: Path, epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "copy_of_disc"
    shutil.copytree(epu_samples_dir / SMARTEM_EXAMPLE / "Images-Disc1", folder / "Images-Disc1")
    code, report = _dry_run(folder, capsys)
    assert code == 0
    assert report["orphans"] == {}
    assert report["parents_synthesized"] == {"acquisition": 1, "grid": 1, "foilhole": 2}
    assert sorted(f["code"] for f in report["findings"]) == [
        "no_metadata",
        "no_session_file",
        "parents_synthesized",
    ]
    assert report["not_posted"] == []


def test_a_folder_without_epu_files_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not EPU")
    code, report = _dry_run(tmp_path, capsys)
    assert code == 1
    assert [f["code"] for f in report["findings"]] == ["no_epu_files"]
    assert report["not_posted"] == ["no EPU files found: nothing to post"]
