"""classify_path patterns (epu-format.md section 3), PathMap and locate_atlas."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from converters import EpuFileKind, PathMap, classify_path, locate_atlas, parse_micrograph_stem

S = "/data/visit/Supervisor_20250108_101446_62_cm40593-1_EPU"
GS = f"{S}/Images-Disc1/GridSquare_8999138"


def test_session_and_gridsquare_metadata() -> None:
    session = classify_path(f"{S}/EpuSession.dm")
    assert session is not None
    assert session.kind is EpuFileKind.SESSION
    assert session.session_root == S
    meta = classify_path(f"{S}/Metadata/GridSquare_8999138.dm")
    assert meta is not None
    assert meta.kind is EpuFileKind.GRIDSQUARE_METADATA
    assert (meta.gridsquare_id, meta.session_root, meta.natural_id) == ("8999138", S, "8999138")
    loose = classify_path("/elsewhere/GridSquare_4590776.dm")
    assert loose is not None
    assert loose.session_root is None


def test_gridsquare_image_is_told_apart_from_metadata() -> None:
    image = classify_path(f"{GS}/GridSquare_20250108_151151.xml")
    assert image is not None
    assert image.kind is EpuFileKind.GRIDSQUARE_IMAGE
    assert image.gridsquare_id == "8999138"
    assert image.session_root == S
    assert image.timestamp == datetime(2025, 1, 8, 15, 11, 51)
    # The .dm form with an .xml extension, or a one-field image name, is neither kind.
    assert classify_path(f"{GS}/GridSquare_8999138.xml") is None
    assert classify_path(f"{S}/Metadata/GridSquare_20250108_151151.dm") is None


def test_foilhole_image() -> None:
    hole = classify_path(f"{GS}/FoilHoles/FoilHole_9015889_20250108_154715.xml")
    assert hole is not None
    assert hole.kind is EpuFileKind.FOILHOLE_IMAGE
    assert (hole.foilhole_id, hole.gridsquare_id, hole.session_root) == ("9015889", "8999138", S)
    assert hole.timestamp == datetime(2025, 1, 8, 15, 47, 15)


@pytest.mark.parametrize(
    ("name", "location", "setting"),
    [
        ("FoilHole_5665438_Data_4601896_4601898_20240406_102527", "4601896", "4601898"),  # EPU 2.x-3.8
        ("FoilHole_9015883_Data_9017347_6_20250108_154915", "9017347", "6"),  # EPU 3.9.1 small <b>
        ("FoilHole_1_Data_3590445_56_20190314_0619", "3590445", "56"),  # EPU 1.x hhmm time
    ],
)
def test_micrograph_variants(name: str, location: str, setting: str) -> None:
    info = classify_path(f"{GS}/Data/{name}.xml")
    assert info is not None
    assert info.kind is EpuFileKind.MICROGRAPH
    assert info.micrograph_id == name == info.natural_id
    assert (info.location_id, info.setting_id) == (location, setting)
    assert info.gridsquare_id == "8999138"
    assert info.session_root == S
    assert info.timestamp is not None
    parts = parse_micrograph_stem(name)
    assert parts is not None
    assert parts[1:3] == (location, setting)


def test_hhmm_names_of_epu_1x() -> None:
    hole = classify_path("/s/Images-Disc1/GridSquare_7/FoilHoles/FoilHole_12_20190314_0619.xml")
    assert hole is not None
    assert hole.kind is EpuFileKind.FOILHOLE_IMAGE
    assert hole.timestamp == datetime(2019, 3, 14, 6, 19)
    square = classify_path("/s/Images-Disc1/GridSquare_7/GridSquare_20190314_0619.xml")
    assert square is not None
    assert square.kind is EpuFileKind.GRIDSQUARE_IMAGE
    # Five digits is neither form.
    assert classify_path("/s/Images-Disc1/GridSquare_7/FoilHoles/FoilHole_12_20190314_06190.xml") is None


def test_fractions_are_not_micrographs() -> None:
    name = "FoilHole_5330585_Data_5338216_5338218_20200206_170645"
    info = classify_path(f"{GS}/Data/{name}_Fractions.xml")
    assert info is not None
    assert info.kind is EpuFileKind.FRACTIONS
    assert info.micrograph_id == name
    assert info.foilhole_id == "5330585"


def test_atlas_kinds() -> None:
    root = "/v/atlas/Supervisor_20230919_115905_Atlas_bi23047-106"
    atlas = classify_path(f"{root}/Sample2/Atlas/Atlas.dm")
    assert atlas is not None
    assert atlas.kind is EpuFileKind.ATLAS
    assert atlas.atlas_root == f"{root}/Sample2/Atlas"
    tile = classify_path(f"{root}/Sample2/Atlas/Tile_19493278_0_19493264.xml")
    assert tile is not None
    assert (tile.kind, tile.tile_id, tile.tile_index, tile.atlas_id) == (
        EpuFileKind.ATLAS_TILE,
        "19493278",
        0,
        "19493264",
    )
    image = classify_path(f"{root}/Sample2/Atlas/Atlas_19493264.xml")
    assert image is not None
    assert (image.kind, image.atlas_id) == (EpuFileKind.ATLAS_IMAGE, "19493264")
    sample = classify_path(f"{root}/Sample2/Sample.dm")
    assert sample is not None
    assert sample.kind is EpuFileKind.SAMPLE
    assert sample.atlas_root == f"{root}/Sample2/Atlas"
    screening = classify_path(f"{root}/ScreeningSession.dm")
    assert screening is not None
    assert screening.kind is EpuFileKind.SCREENING_SESSION


@pytest.mark.parametrize(
    "name",
    [
        "FoilHole_1_Data_2_3_20250108_154915.jpg",
        "GridSquare_20250108_151151.jpg",
        "Atlas_1.mrc",
        "FoilHole_1_Data_2_3_20250108_154915_fractions.tiff",
        "notes.txt",
        "EpuSession.dm.tmp",
        "",
    ],
)
def test_non_epu_names(name: str) -> None:
    assert classify_path(f"/x/{name}") is None


def test_case_insensitive_and_windows_paths() -> None:
    info = classify_path(
        r"Z:\nt1\Sup_1\Images-Disc1\GridSquare_5\Data\foilhole_1_data_2_3_20250108_154915.XML"
    )
    assert info is not None
    assert info.kind is EpuFileKind.MICROGRAPH
    assert info.gridsquare_id == "5"
    assert info.session_root == r"Z:\nt1\Sup_1"


def test_invalid_date_in_name_gives_no_timestamp() -> None:
    info = classify_path(f"{GS}/FoilHoles/FoilHole_1_20251399_999999.xml")
    assert info is not None
    assert info.timestamp is None


def test_path_map_longest_prefix_case_insensitive(tmp_path: Path) -> None:
    path_map = PathMap.parse([r"Z:\=/mnt/z", rf"z:\NT32457-6={tmp_path}"])
    assert path_map.map(r"Z:\nt32457-6\atlas\Atlas.dm") == tmp_path / "atlas" / "Atlas.dm"
    assert path_map.map(r"Z:\other\x.dm") == Path("/mnt/z/other/x.dm")
    assert path_map.map(r"Y:\other\x.dm") is None
    assert not PathMap()
    with pytest.raises(ValueError, match="WINDOWS_PREFIX=LOCAL_DIR"):
        PathMap.parse(["no-equals-sign"])


def _make_visit(tmp_path: Path) -> tuple[Path, Path]:
    visit = tmp_path / "nt32457-6"
    session = visit / "Supervisor_20240405_115113_0_SmartEPU_ApoF"
    session.mkdir(parents=True)
    atlas = visit / "Atlas" / "Supervisor_20240404_093820_X" / "Sample4" / "Atlas" / "Atlas.dm"
    atlas.parent.mkdir(parents=True)
    atlas.write_bytes(b"<x/>")
    return session, atlas


def test_locate_atlas_in_sibling_tree_case_insensitive(tmp_path: Path) -> None:
    session, atlas = _make_visit(tmp_path)
    windows = r"Z:\nt32457-6\atlas\Supervisor_20240404_093820_X\Sample4\Atlas\Atlas.dm"
    assert locate_atlas(windows, session) == atlas
    # A map wins even when it points elsewhere (it is authoritative).
    mapped = locate_atlas(windows, session, PathMap({"Z:\\": "/srv"}))
    assert mapped == Path("/srv/nt32457-6/atlas/Supervisor_20240404_093820_X/Sample4/Atlas/Atlas.dm")
    assert locate_atlas(r"Z:\nt32457-6\atlas\Other\Sample1\Atlas\Atlas.dm", session) is None
    assert locate_atlas(windows, None) is None


def test_locate_atlas_epu1_inside_session(tmp_path: Path) -> None:
    session = tmp_path / "hanupa6_20190312_122509"
    session.mkdir()
    (session / "Atlas.dm").write_bytes(b"<x/>")
    assert locate_atlas(r"Y:\a\b\hanupa6_20190312_122509\Atlas.dm", session) == session / "Atlas.dm"
