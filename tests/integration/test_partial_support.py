"""Helpers of the partial-folder tests: what a folder's file names promise, and the backend's tree of it.

No tests here. Everything goes through the SmartEM API's own read routes (``/acquisitions/{uuid}/grids``,
``/grids/{uuid}/gridsquares``, ``/gridsquares/{uuid}/foilholes``, ``/foilholes/{uuid}/micrographs``), so the
checks take any SmartEM-compatible backend's base URL: the testbed's, or the real backend's.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.ingest.identity import EntityKind, acquisition_key, entity_uuid
from converters.parse import ParsedAtlas, ParsedSession, parse_file
from converters.paths import EpuFileKind, classify_path
from tests.integration.test_ingest_support import run_agent_once


@dataclass
class FolderExpectation:
    """The entities a folder's file names promise for one session folder (acquisition key ``acq``)."""

    acq: str
    squares: set[str] = field(default_factory=set)
    holes: dict[str, str] = field(default_factory=dict)
    """Foil hole id -> grid square id."""
    micrographs: dict[str, str] = field(default_factory=dict)
    """Micrograph stem -> foil hole id."""


def folder_expectation(watch_root: Path, session_folder: Path) -> FolderExpectation:
    """Squares, holes and micrographs that the names of the EPU files under ``session_folder`` imply.

    Every grid square with a file in its ``GridSquare_<id>`` folder or on the atlas that the session file names
    (when it is found), every hole with a ``FoilHoles/`` image or a micrograph, every micrograph: what an import
    must post whatever else the folder lacks.
    """
    expected = FolderExpectation(acquisition_key(session_folder.absolute(), watch_root.absolute()))
    session_file = session_folder / "EpuSession.dm"
    if session_file.is_file():
        session = parse_file(session_file)
        assert isinstance(session, ParsedSession)
        atlas_local = session.acquisition.atlas_local_path
        if atlas_local is not None and Path(atlas_local).is_file():
            atlas = parse_file(atlas_local)
            assert isinstance(atlas, ParsedAtlas)
            expected.squares.update(sq.gridsquare_id for sq in atlas.gridsquares)
    for path in sorted(session_folder.rglob("*.xml")):
        info = classify_path(path)
        if info is None or info.gridsquare_id is None:
            continue
        if info.kind in (EpuFileKind.GRIDSQUARE_IMAGE, EpuFileKind.FOILHOLE_IMAGE, EpuFileKind.MICROGRAPH):
            expected.squares.add(info.gridsquare_id)
        if info.kind in (EpuFileKind.FOILHOLE_IMAGE, EpuFileKind.MICROGRAPH) and info.foilhole_id:
            expected.holes[info.foilhole_id] = info.gridsquare_id
        if info.kind is EpuFileKind.MICROGRAPH and info.micrograph_id and info.foilhole_id:
            expected.micrographs[info.micrograph_id] = info.foilhole_id
    return expected


def _get(http: httpx.Client, path: str) -> Any:
    resp = http.get(path)
    resp.raise_for_status()
    return resp.json()


def backend_tree(url: str, acq: str, *, auth: httpx.Auth | None = None) -> dict[str, Any]:
    """The acquisition's grids, squares, holes and micrographs as the backend serves them, parent by parent
    (``auth``: the real backend's bearer token)."""
    acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
    tree: dict[str, Any] = {"acquisition": None, "grids": [], "squares": [], "holes": [], "micrographs": []}
    with httpx.Client(base_url=url, timeout=30, auth=auth) as http:
        resp = http.get(f"/acquisitions/{acq_uuid}")
        if resp.status_code == 404:
            return tree
        resp.raise_for_status()
        tree["acquisition"] = resp.json()
        for grid in _get(http, f"/acquisitions/{acq_uuid}/grids"):
            tree["grids"].append(grid)
            for square in _get(http, f"/grids/{grid['uuid']}/gridsquares"):
                tree["squares"].append({**square, "_grid_uuid": grid["uuid"]})
                for hole in _get(http, f"/gridsquares/{square['uuid']}/foilholes"):
                    tree["holes"].append({**hole, "_square_uuid": square["uuid"]})
                    for mic in _get(http, f"/foilholes/{hole['uuid']}/micrographs"):
                        tree["micrographs"].append({**mic, "_hole_uuid": hole["uuid"]})
    return tree


def tree_problems(url: str, expected: FolderExpectation, *, auth: httpx.Auth | None = None) -> list[str]:
    """Everything that differs between the backend and ``expected``: each entity present exactly once, under
    its deterministic uuid and its right parent (found by walking the parent routes), nothing missing."""
    acq = expected.acq
    tree = backend_tree(url, acq, auth=auth)
    problems: list[str] = []
    if tree["acquisition"] is None:
        return [f"acquisition {acq} missing on the backend"]
    grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
    if [g["uuid"] for g in tree["grids"]] != [grid_uuid]:
        problems.append(f"grids {[g['uuid'] for g in tree['grids']]}, expected [{grid_uuid}]")

    def check(
        kind: EntityKind, rows: list[dict[str, Any]], want: dict[str, str | None], parent_key: str
    ) -> None:
        by_uuid = {entity_uuid(acq, kind, nid): (nid, parent) for nid, parent in want.items()}
        seen = Counter(row["uuid"] for row in rows)
        for uuid, n in seen.items():
            if n > 1:
                problems.append(f"{kind} {uuid} appears {n} times")
            if uuid not in by_uuid:
                problems.append(f"unexpected {kind} {uuid}")
        for uuid, (nid, _parent) in by_uuid.items():
            if uuid not in seen:
                problems.append(f"missing {kind} {nid}")
        for row in rows:
            nid_parent = by_uuid.get(row["uuid"])
            if nid_parent is None or nid_parent[1] is None:
                continue
            if row[parent_key] != nid_parent[1]:
                problems.append(f"{kind} {nid_parent[0]} under {row[parent_key]}, expected {nid_parent[1]}")

    check(EntityKind.GRIDSQUARE, tree["squares"], dict.fromkeys(expected.squares, grid_uuid), "_grid_uuid")
    check(
        EntityKind.FOILHOLE,
        tree["holes"],
        {h: entity_uuid(acq, EntityKind.GRIDSQUARE, sq) for h, sq in expected.holes.items()},
        "_square_uuid",
    )
    check(
        EntityKind.MICROGRAPH,
        tree["micrographs"],
        {m: entity_uuid(acq, EntityKind.FOILHOLE, h) for m, h in expected.micrographs.items()},
        "_hole_uuid",
    )
    return problems


def ingest_once(
    watch: Path, backend_url: str, state_dir: Path, *, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``ingest --once --json`` (exit 0 required) and return its final report (``env``: extra settings)."""
    out = run_agent_once(watch, backend_url, state_dir, env=env)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


SMARTEM_EXAMPLE = "DiamondLightSource__smartem-decisions/tests/testdata/epu-dir-example"
"""The SmartEM repository's own test folder: ``EpuSession.dm`` and ``Images-Disc1`` only (no ``Metadata/``, no
``FoilHoles/`` image for the holes its four micrographs were taken in)."""


def check_smartem_test_folder(
    backend_url: str,
    samples_dir: Path,
    state_dir: Path,
    *,
    auth: httpx.Auth | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Import the SmartEM test folder (read in place) into the backend at ``backend_url``; all of it arrives.
    ``auth`` and ``env`` carry a real backend's credentials to the reads and to the agent."""
    folder = samples_dir / SMARTEM_EXAMPLE
    expected = folder_expectation(folder, folder)
    # What the folder holds: 4 micrographs in 2 holes that have no file of their own, in 2 squares.
    assert len(expected.micrographs) == 4
    mic_holes = set(expected.micrographs.values())
    assert len(mic_holes) == 2
    assert len(expected.squares) == 2
    report = ingest_once(folder, backend_url, state_dir, env=env)
    assert report["not_posted"] == [], report
    assert report["orphans"] == {}
    assert report["parents_synthesized"] == {"foilhole": 2}
    codes = sorted(f["code"] for f in report["findings"])
    assert codes == ["atlas_not_found", "no_metadata", "parents_synthesized"], report["findings"]
    assert tree_problems(backend_url, expected, auth=auth) == []
    tree = backend_tree(backend_url, expected.acq, auth=auth)
    assert {h["foilhole_id"] for h in tree["holes"]} >= mic_holes
    assert len(tree["micrographs"]) == 4
    assert len(tree["squares"]) == 2


def check_images_disc_only_folder(
    backend_url: str,
    source_session: Path,
    work: Path,
    *,
    auth: httpx.Auth | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Copy only ``Images-Disc1/`` of ``source_session`` into a folder of its own and import it into the backend
    at ``backend_url``: everything it holds arrives, under an acquisition and grid named after the folder. Then
    the session's ``EpuSession.dm`` is added and a second import completes the same acquisition and grid by an
    update (same uuids, no duplicate)."""
    archive = work / "archived_session"
    shutil.copytree(source_session / "Images-Disc1", archive / "Images-Disc1")
    expected = folder_expectation(archive, archive)
    assert expected.micrographs
    report = ingest_once(archive, backend_url, work / "state", env=env)
    assert report["not_posted"] == [], report
    synthesized = report["parents_synthesized"]
    assert (synthesized.get("acquisition"), synthesized.get("grid")) == (1, 1), synthesized
    assert "no_session_file" in {f["code"] for f in report["findings"]}
    assert tree_problems(backend_url, expected, auth=auth) == []
    tree = backend_tree(backend_url, expected.acq, auth=auth)
    assert tree["acquisition"]["name"] == archive.name

    # The session file turns up later: the same acquisition is completed, nothing is duplicated.
    shutil.copy2(source_session / "EpuSession.dm", archive / "EpuSession.dm")
    report = ingest_once(archive, backend_url, work / "state", env=env)
    assert report["not_posted"] == [], report
    assert report["parents_completed"].get("acquisition") == 1, report
    assert "no_session_file" not in {f["code"] for f in report["findings"]}
    completed = folder_expectation(archive, archive)  # the session may name an atlas that adds squares
    assert completed.holes == expected.holes
    assert completed.micrographs == expected.micrographs
    assert tree_problems(backend_url, completed, auth=auth) == []
    tree = backend_tree(backend_url, expected.acq, auth=auth)
    assert tree["acquisition"]["name"] != archive.name  # the session's own name, sent as an update
