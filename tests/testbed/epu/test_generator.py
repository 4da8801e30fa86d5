"""The EPU session generator: files parse with ``converters`` into exactly the manifest, at every preset."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path

import pytest

from converters import IncompleteFileError, parse_file
from converters.paths import classify_path
from testbed.epu import GeneratorConfig, Manifest, SessionGenerator, TimingMode, generate
from testbed.epu.compare import compare_with_backend, compare_with_files
from testbed.epu.compare_files import observe_files
from testbed.epu.compare_records import compare, expected_records
from testbed.epu.file_ops import FileOp


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("small") / "visit"
    return out, generate(out, preset="small", seed=7)


def test_small_preset_has_the_demo_size(small: tuple[Path, Manifest]) -> None:
    _, manifest = small
    counts = manifest.expected_counts().as_dict()
    assert counts == {
        "acquisition": 1,
        "grid": 1,
        "atlas": 1,
        "atlas_tile": 6,
        "gridsquare": 15,
        "foilhole": 36,
        "micrograph": 120,
    }
    # SmartEM drops near-grid-bar holes: 30 remain, each imaged, 4 micrographs per hole.
    assert manifest.expected_counts(include_near_grid_bar=False).foilhole == 30
    assert sum(1 for s in manifest.gridsquares if s.imaged) == 3


def test_small_preset_parses_into_exactly_the_manifest(small: tuple[Path, Manifest]) -> None:
    out, manifest = small
    diff = compare_with_files(manifest, out)
    assert diff.ok, diff.summary()
    assert diff.compared["micrograph"] == 120
    assert Manifest.load(out) == manifest


def test_layout_matches_epu(small: tuple[Path, Manifest]) -> None:
    out, manifest = small
    session = out / manifest.acquisitions[0].session_dir
    assert (session / "EpuSession.dm").is_file()
    assert len(list((session / "Metadata").glob("GridSquare_*.dm"))) == 15
    # Image folders only for imaged squares; two foil-hole images per imaged hole; previews next to XMLs.
    assert len(list((session / "Images-Disc1").iterdir())) == 3
    assert len(list(session.rglob("FoilHoles/*.xml"))) == 60
    assert len(list(session.rglob("Data/*.jpg"))) == 120
    atlas = out / manifest.atlases[0].path
    assert atlas.is_file()
    assert (atlas.parent.parent / "Sample.dm").is_file()
    assert (atlas.parent.parent.parent / "ScreeningSession.dm").is_file()
    raw = (session / "EpuSession.dm").read_bytes()
    assert raw.startswith(b"<EpuSessionXml ")
    assert b"\n" not in raw
    assert manifest.acquisitions[0].atlas_path.startswith(manifest.storage_path + "\\atlas\\")


def test_comparison_reports_differences(small: tuple[Path, Manifest]) -> None:
    out, manifest = small
    expected = expected_records(manifest)
    observed = observe_files(out)
    key = next(iter(expected["micrograph"]))
    expected["micrograph"][key] = {**expected["micrograph"][key], "defocus": 1.0}
    hole = next(iter(expected["foilhole"]))
    del expected["foilhole"][hole]
    diff = compare(expected, observed)
    assert not diff.ok
    assert [(m.kind, m.field) for m in diff.mismatches] == [("micrograph", "defocus")]
    assert diff.unexpected["foilhole"] == [hole]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = tmp_path / "a" / "visit"
    b = tmp_path / "b" / "visit"
    c = tmp_path / "c" / "visit"
    generate(a, seed=3, previews=False)
    generate(b, seed=3, previews=False, disorder=0.5)  # write order does not change content
    generate(c, seed=4, previews=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_rewrites_grow_gridsquare_metadata_and_session(tmp_path: Path) -> None:
    generator = SessionGenerator(tmp_path / "visit", GeneratorConfig(seed=2, previews=False))
    sizes: dict[str, list[int]] = {}
    hole_counts: dict[str, list[int]] = {}
    for event in generator.iter_writes():
        sizes.setdefault(event.rel_path, []).append(event.size)
        if event.kind == "gridsquare_metadata":
            parsed = parse_file(generator.out_dir / event.rel_path)
            hole_counts.setdefault(event.rel_path, []).append(len(parsed.entities()) - 1)
    session = next(p for p in sizes if p.endswith("EpuSession.dm"))
    assert len(sizes[session]) == 5  # start, after each of the 3 squares, final with EndDateTime
    grown = [p for p, counts in hole_counts.items() if len(counts) == 3]
    assert len(grown) == 3
    for path in grown:
        assert hole_counts[path] == [0, 12, 12]
        assert sizes[path][0] < sizes[path][1] < sizes[path][2]


def test_disorder_writes_children_before_parents(tmp_path: Path) -> None:
    generator = SessionGenerator(tmp_path / "visit", GeneratorConfig(seed=5, disorder=1.0))
    order = [op.rel_path for op in generator.ops]
    session = next(i for i, p in enumerate(order) if p.endswith("EpuSession.dm"))
    assert any(p.endswith(".dm") and "/Metadata/" in p for p in order[:session])
    first_image: dict[str, int] = {}
    early_micrographs = 0
    for i, op in enumerate(generator.ops):
        if op.kind not in ("foilhole_image", "micrograph"):
            continue
        hole = Path(op.rel_path).name.split("_")[1]
        if op.kind == "foilhole_image":
            first_image.setdefault(hole, i)
        elif op.kind == "micrograph" and hole not in first_image:
            early_micrographs += 1
    assert early_micrographs > 0
    generator.run()
    diff = compare_with_files(generator.manifest, generator.out_dir)
    assert diff.ok, diff.summary()


async def test_partial_writes_are_visible_truncated(tmp_path: Path) -> None:
    config = GeneratorConfig(
        seed=1, partial_writes=1.0, partial_pause_s=0.03, previews=False, partial_chunks=3
    )
    generator = SessionGenerator(tmp_path / "visit", config)
    target = generator.out_dir / generator.ops[0].rel_path  # ScreeningSession.dm, the first write
    seen_truncated = False

    async def watch() -> None:
        nonlocal seen_truncated
        while not seen_truncated:
            if target.exists() and target.stat().st_size > 0:
                try:
                    parse_file(target)
                except IncompleteFileError:
                    seen_truncated = True
                    return
                return
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    events = []
    async for event in generator.aiter_writes():
        events.append(event)
        if len(events) == 5:
            break
    await asyncio.wait_for(watcher, 5)
    assert events[0].partial
    assert seen_truncated
    parse_file(target)  # complete once the write finished


def test_timing_modes_pace_as_configured(tmp_path: Path) -> None:
    def delays(**kwargs: object) -> list[float]:
        config = GeneratorConfig.model_validate({"seed": 1, **kwargs})
        return SessionGenerator(tmp_path / "visit", config)._delays()

    assert set(delays(timing=TimingMode.FAST)) == {0.0}
    realtime = delays(timing=TimingMode.REALTIME)
    span = SessionGenerator(tmp_path / "visit", GeneratorConfig(seed=1)).virtual_span_s
    assert sum(realtime) == pytest.approx(span)
    fitted = delays(timing=TimingMode.ACCELERATED, duration_s=20.0)
    assert sum(fitted) == pytest.approx(20.0)
    bursts = delays(timing=TimingMode.BURSTS, duration_s=20.0, burst_size=40)
    assert sum(bursts) == pytest.approx(20.0)
    assert bursts.count(0.0) > len(bursts) * 0.8  # files are dumped in groups
    capped = delays(timing=TimingMode.REALTIME, max_delay_s=0.5)
    assert max(capped) <= 0.5


async def test_run_async_spreads_writes_over_the_duration(tmp_path: Path) -> None:
    config = GeneratorConfig(seed=1, timing=TimingMode.ACCELERATED, duration_s=1.5, previews=False)
    generator = SessionGenerator(tmp_path / "visit", config)
    started = time.monotonic()
    manifest = await generator.run_async()
    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed <= 6.0
    assert compare_with_files(manifest, generator.out_dir).ok


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "holes", "micrographs"), [("medium", 80, 150), ("large", 40, 100)])
def test_big_presets_parse_into_the_manifest_sampled(
    tmp_path: Path, preset: str, holes: int, micrographs: int
) -> None:
    """All .dm files (sessions, every square with its holes, atlases) plus a sample of the image XMLs."""
    generator = SessionGenerator(tmp_path / "visit", GeneratorConfig(preset=preset, seed=11, previews=False))
    rng = random.Random(0)
    totals = {"foilhole_image": 0, "micrograph": 0}
    for op in generator.ops:
        if op.kind in totals:
            totals[op.kind] += 1
    rates = {
        "foilhole_image": holes / totals["foilhole_image"],
        "micrograph": micrographs / totals["micrograph"],
    }

    chosen_holes: dict[str, bool] = {}

    def select(op: FileOp) -> bool:
        if op.kind == "foilhole_image":
            # Both images of a sampled hole, so that the newest one wins as in the full folder.
            hole = Path(op.rel_path).name.split("_")[1]
            return chosen_holes.setdefault(hole, rng.random() < rates[op.kind] * 2)
        if op.kind == "micrograph":
            return rng.random() < rates[op.kind]
        return op.kind != "atlas_tile"  # tile XMLs only add image metadata; Atlas.dm carries the tiles

    written = generator.write_final(select)
    assert all(classify_path(p) is not None for p in written)
    manifest = generator.manifest
    counts = manifest.expected_counts()
    assert counts.micrograph == (4000 if preset == "medium" else 40000)
    images = sum(
        manifest.files.get(k, 0) for k in ("gridsquare_image", "foilhole_image", "micrograph", "atlas_tile")
    )
    with_previews = (
        manifest.total_files + images + manifest.files.get("atlas_image", 0)
    )  # one JPEG per image XML
    low, high = (9_000, 11_000) if preset == "medium" else (95_000, 110_000)
    assert low <= with_previews <= high
    diff = compare_with_files(
        manifest,
        generator.out_dir,
        complete=("acquisition", "grid", "atlas", "atlas_tile", "gridsquare", "foilhole"),
    )
    assert diff.ok, diff.summary()
    assert diff.compared["micrograph"] > 0


def _backend_tree(manifest: Manifest, key: str) -> dict[str, object]:
    """Entities as the testbed backend returns them (request bodies under ``data``), built from the manifest."""
    holes = [h for h in manifest.foilholes if h.acquisition_key == key and not h.is_near_grid_bar]
    squares = [s for s in manifest.gridsquares if s.acquisition_key == key]
    entities = {
        "acquisition": [{"uuid": "a", "data": {"uuid": "a", "name": key}}],
        "grid": [{"uuid": "g", "data": {"uuid": "g", "name": manifest.grids[0].name}}],
        "atlas": [{"uuid": "at", "data": {"atlas_id": manifest.atlases[0].atlas_id}}],
        "atlas_tile": [
            {
                "uuid": t.tile_id,
                "data": {
                    "tile_id": t.tile_id,
                    "position_x": t.position_x,
                    "position_y": t.position_y,
                    "size_x": t.size_x,
                    "size_y": t.size_y,
                    "base_filename": t.base_filename,
                },
            }
            for t in manifest.atlas_tiles
        ],
        "gridsquare": [
            {
                "uuid": s.gridsquare_id,
                "data": {
                    "gridsquare_id": s.gridsquare_id,
                    "selected": s.selected,
                    "stage_position_x": s.stage_position_x,
                    "stage_position_y": s.stage_position_y,
                    "stage_position_z": s.stage_position_z,
                },
            }
            for s in squares
        ],
        "foilhole": [
            {
                "uuid": h.foilhole_id,
                "data": {
                    "foilhole_id": h.foilhole_id,
                    "gridsquare_id": h.gridsquare_id,
                    "x_stage_position": h.x_stage_position,
                    "y_stage_position": h.y_stage_position,
                    "is_near_grid_bar": False,
                },
            }
            for h in holes
        ],
        "micrograph": [
            {"uuid": m.micrograph_id, "data": {"foilhole_id": m.foilhole_id, "location_id": m.location_id}}
            for m in manifest.micrographs
        ],
    }
    return {"acquisition_uuid": "a", "entities": entities, "tile_positions": []}


def test_compare_with_backend_entities(small: tuple[Path, Manifest]) -> None:
    _, manifest = small
    key = manifest.acquisitions[0].acquisition_key
    tree = _backend_tree(manifest, key)
    diff = compare_with_backend(manifest, {key: tree})
    assert diff.ok, diff.summary()
    assert diff.compared["foilhole"] == 30
    entities = tree["entities"]
    assert isinstance(entities, dict)
    entities["micrograph"].append(entities["micrograph"][0])  # a duplicate post
    entities["foilhole"].pop()  # a lost hole
    diff = compare_with_backend(manifest, {key: tree})
    assert len(diff.missing["foilhole"]) == 1
    assert len(diff.unexpected["micrograph"]) == 1
