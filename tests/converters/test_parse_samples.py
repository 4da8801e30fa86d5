"""Every real EPU sample parses, and the values pinned here are the ones written in the files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from converters import (
    EpuFileKind,
    ParsedAtlas,
    ParsedAtlasImage,
    ParsedAtlasTile,
    ParsedFoilHoleImage,
    ParsedFractions,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSample,
    ParsedScreeningSession,
    ParsedSession,
    PathMap,
    classify_path,
    parse_file,
)
from converters.models import ImageMetadata

pytestmark = pytest.mark.samples

SMARTEM = "DiamondLightSource__smartem-decisions"
CHAIN = f"{SMARTEM}/docs/assets/metadata_spa_acquisition"
EPU391 = f"{SMARTEM}/tests/testdata/epu-dir-example"
HARVEST = "kylelmorris__EMharvest/_repo_data"
HARVEST_SESSION = f"{HARVEST}/Supervisor_20230919_140141_84_bi23047-106_grid1"
SCREENING = f"{HARVEST}/atlas/Supervisor_20230919_115905_Atlas_bi23047-106"
AFIS = "DustinMorado__EPU_group_AFIS/spec/Images-Disc1/GridSquare_5324661/Data"
ATLAS37 = f"{CHAIN}/Atlas/Supervisor_20240404_093820_Pete_Miriam_HexAuFoil/Sample4/Atlas/Atlas.dm"
CEST = timezone(timedelta(hours=1))
BST = timezone(timedelta(hours=1))


def _parse(root: Path, rel: str, **kwargs: object) -> object:
    return parse_file(root / rel, **kwargs)  # type: ignore[arg-type]


def test_every_sample_file_parses(epu_samples_dir: Path) -> None:
    counts: dict[EpuFileKind, int] = {}
    for path in sorted(epu_samples_dir.rglob("*")):
        info = classify_path(path)
        if info is None:
            continue
        result = parse_file(path)
        assert result.kind is info.kind
        assert result.entities() is not None
        counts[info.kind] = counts.get(info.kind, 0) + 1
    # The counts of epu-samples/SOURCES.md.
    assert counts == {
        EpuFileKind.MICROGRAPH: 194,
        EpuFileKind.FRACTIONS: 189,
        EpuFileKind.ATLAS_TILE: 140,
        EpuFileKind.ATLAS: 8,
        EpuFileKind.SAMPLE: 6,
        EpuFileKind.FOILHOLE_IMAGE: 5,
        EpuFileKind.GRIDSQUARE_IMAGE: 4,
        EpuFileKind.ATLAS_IMAGE: 4,
        EpuFileKind.SESSION: 3,
        EpuFileKind.GRIDSQUARE_METADATA: 1,
        EpuFileKind.SCREENING_SESSION: 1,
    }


def test_epu37_session(epu_samples_dir: Path) -> None:
    result = _parse(epu_samples_dir, f"{CHAIN}/EPU_session/EpuSession.dm")
    assert isinstance(result, ParsedSession)
    acq = result.acquisition
    assert acq.session_id == "4600928"
    assert acq.name == "Supervisor_20240405_115113_0_SmartEPU_ApoF"
    assert acq.atlas_path == (
        r"Z:\nt32457-6\atlas\Supervisor_20240404_093820_Pete_Miriam_HexAuFoil\Sample4\Atlas\Atlas.dm"
    )
    assert len(acq.gridsquare_ids) == 222
    assert "4590776" in acq.gridsquare_ids
    assert acq.epu_version == "3.7.0.6930"  # from z:Assembly, not the 3.0.0.0 Version element
    assert acq.start_time == datetime(2024, 4, 5, 11, 36, 47, 228544, tzinfo=UTC)
    assert acq.storage_path == r"Z:\nt32457-6"
    assert acq.clustering_mode == "NoClustering"
    assert acq.clustering_radius_m == 0.0
    assert acq.hole_size_m == pytest.approx(2.1316745710968125e-06)
    assert acq.autoloader_slot == 3
    assert acq.grid_type == "HoleyCarbon"
    assert len(acq.template_areas) == 4
    area = next(a for a in acq.template_areas if a.area_id == "4601896")
    assert area.setting_ids == ["4601898"]
    assert len(area.defocus_values_m) == 8
    assert area.exposure_time_s == 1.7
    # The atlas lives outside the session folder, in the sibling Atlas/ tree (case differs from "atlas").
    assert acq.atlas_local_path == str(epu_samples_dir / ATLAS37)
    grid = result.grid
    assert grid.session_id == acq.session_id
    assert grid.name == acq.name
    assert grid.session_root == grid.data_dir == str(epu_samples_dir / CHAIN / "EPU_session")
    assert grid.atlas_dir == str((epu_samples_dir / ATLAS37).parent)


def test_session_atlas_through_path_map(epu_samples_dir: Path) -> None:
    path_map = PathMap({r"Z:\nt32457-6\atlas": epu_samples_dir / CHAIN / "Atlas"})
    result = _parse(epu_samples_dir, f"{CHAIN}/EPU_session/EpuSession.dm", path_map=path_map)
    assert isinstance(result, ParsedSession)
    assert result.acquisition.atlas_local_path == str(epu_samples_dir / ATLAS37)


def test_other_sessions(epu_samples_dir: Path) -> None:
    s34 = _parse(epu_samples_dir, f"{HARVEST_SESSION}/EpuSession.dm")
    assert isinstance(s34, ParsedSession)
    assert s34.acquisition.epu_version == "3.4.0.5704"
    assert s34.acquisition.atlas_local_path == str(
        epu_samples_dir / SCREENING / "Sample2" / "Atlas" / "Atlas.dm"
    )
    s391 = _parse(epu_samples_dir, f"{EPU391}/EpuSession.dm")  # pretty-printed, with an XML declaration
    assert isinstance(s391, ParsedSession)
    assert s391.acquisition.epu_version == "3.9.1.8206"
    assert s391.acquisition.name == "Supervisor_20250108_101446_62_cm40593-1_EPU"
    assert s391.acquisition.atlas_local_path is None
    assert any("not found locally" in w for w in s391.warnings)


def test_gridsquare_4590776_metadata(epu_samples_dir: Path) -> None:
    result = _parse(epu_samples_dir, f"{CHAIN}/GridSquare_4590776.dm")
    assert isinstance(result, ParsedGridSquareMetadata)
    square = result.gridsquare
    assert square.gridsquare_id == "4590776"
    assert square.atlas_node_id == 4590776
    assert square.state == "InProgress"
    assert square.selected is True
    assert square.unusable is False
    assert square.stage_position is not None
    assert square.stage_position.x_m == pytest.approx(-4.9194160965271294e-05)
    assert square.stage_position.y_m == pytest.approx(-5.6196772493422031e-04)
    assert square.image_base_filename == "GridSquare_20240406_102420"
    assert (square.outline_center_x_px, square.outline_center_y_px) == (1458.27393, 1067.25854)
    assert len(square.outline_vertices_px) == 30
    holes = result.foilholes
    assert len(holes) == 570 == square.foilhole_count
    assert len({h.foilhole_id for h in holes}) == 570
    assert all(h.gridsquare_id == "4590776" for h in holes)
    assert sum(1 for h in holes if h.micrograph_ids) == 217
    hole = next(h for h in holes if h.foilhole_id == "5665438")
    assert (hole.x_location_px, hole.y_location_px) == (1396.0, 972.0)
    assert hole.diameter_px == pytest.approx(51.28809)
    assert hole.is_near_grid_bar is False
    assert hole.state == "Completed"
    assert hole.image_base_filename == "FoilHole_5665438_20240406_102451"
    assert hole.micrograph_ids[0] == "FoilHole_5665438_Data_4601896_4601898_20240406_102527"
    assert len(hole.micrograph_ids) == 4
    assert hole.stage_position is not None
    assert hole.stage_position.x_m == pytest.approx(-4.2565477384562446e-05)
    # Near-grid-bar holes are kept, with their flag.
    assert any(h.is_near_grid_bar for h in holes)


def _image(result: object) -> ImageMetadata:
    if isinstance(result, ParsedMicrograph):
        assert result.micrograph.image is not None
        return result.micrograph.image
    assert isinstance(result, ParsedGridSquareImage | ParsedFoilHoleImage | ParsedAtlasImage)
    return result.image


@pytest.mark.parametrize(
    ("rel", "version", "pixel_m", "dose_a2", "defocus_m", "applied_m", "detector", "commercial"),
    [
        (
            f"{AFIS}/FoilHole_5330585_Data_5338216_5338218_20200206_170645.xml",
            "2.6.0.59",
            8.707678328390145e-11,
            30.430622179514923,
            -9.110596511742561e-07,
            -5e-07,
            "BM-Falcon",
            None,  # DetectorCommercialName is absent in EPU <= 2.6
        ),
        (
            f"{HARVEST_SESSION}/Images-Disc1/GridSquare_19493759/Data/"
            "FoilHole_19513699_Data_19508496_19508498_20230919_154056.xml",
            "3.4.0.5704",
            1.0558814239614023e-10,
            39.92313609451879,
            1.0135437443338275e-06,
            -2e-06,
            "EF-CCD",
            "BioQuantum K3",
        ),
        (
            f"{CHAIN}/EPU_session/Images-Disc1/GridSquare_4590776/GridSquare_20240406_102420.xml",
            "3.7.0.6930",
            4.156276034450457e-08,
            0.00040331117842286134,
            0.00015000000000000066,
            -5e-05,
            "EF-CCD",
            "BioQuantum K3",
        ),
        (
            f"{EPU391}/Images-Disc1/GridSquare_8999138/Data/FoilHole_9015883_Data_9017347_6_20250108_154915.xml",
            "3.9.1.8206",
            1.0558814239614023e-10,
            14.410836806690225,
            4.841602291965749e-07,
            -2.7e-06,
            "EF-CCD",
            "BioQuantum K3",
        ),
    ],
)
def test_image_values_across_epu_versions(
    epu_samples_dir: Path,
    rel: str,
    version: str,
    pixel_m: float,
    dose_a2: float,
    defocus_m: float,
    applied_m: float,
    detector: str,
    commercial: str | None,
) -> None:
    image = _image(_parse(epu_samples_dir, rel))
    assert image.software_name == "EPU"
    assert image.software_version == version
    assert image.pixel_size_x_m == pytest.approx(pixel_m, rel=1e-12)
    assert image.dose_e_per_a2 == pytest.approx(dose_a2, rel=1e-12)
    assert image.defocus_m == pytest.approx(defocus_m, rel=1e-12)
    assert image.applied_defocus_m == pytest.approx(applied_m, rel=1e-12)
    assert image.detector_name == detector
    assert image.detector_commercial_name == commercial
    assert image.acceleration_voltage_v == 300000.0
    assert image.acquisition_datetime is not None
    assert image.acquisition_datetime.tzinfo is not None
    # DoseOnCamera / (pixel size in A)^2 = Dose x 1e-20 (epu-format.md 4.6).
    if image.dose_on_camera_e_per_px is not None and image.pixel_size_a is not None:
        assert image.dose_on_camera_e_per_px / image.pixel_size_a**2 == pytest.approx(dose_a2, rel=1e-3)


def test_micrograph_ids_and_fractionation(epu_samples_dir: Path) -> None:
    result = _parse(
        epu_samples_dir,
        f"{EPU391}/Images-Disc1/GridSquare_8999138/Data/FoilHole_9015883_Data_9017347_6_20250108_154915.xml",
    )
    assert isinstance(result, ParsedMicrograph)
    mic = result.micrograph
    assert mic.micrograph_id == "FoilHole_9015883_Data_9017347_6_20250108_154915"
    assert (mic.foilhole_id, mic.gridsquare_id, mic.location_id, mic.setting_id) == (
        "9015883",
        "8999138",
        "9017347",
        "6",
    )
    assert mic.session_root == str(epu_samples_dir / EPU391)
    assert mic.image is not None
    assert mic.image.fractionation is not None
    assert (mic.image.fractionation.kind, mic.image.number_of_fractions) == ("equidistant", 50)
    assert (mic.image.image_width_px, mic.image.image_height_px) == (2880, 2046)
    assert (mic.image.binning_x, mic.image.binning_y) == (2, 2)
    assert mic.image.energy_filter_on is True
    assert mic.image.phase_plate_used is False
    assert mic.image.nominal_magnification == 165000.0
    assert mic.image.unique_id == "a57ec324-5326-43a3-8dc6-ee3424aa5814"
    falcon = _parse(epu_samples_dir, f"{AFIS}/FoilHole_5330585_Data_5338216_5338218_20200206_170645.xml")
    assert isinstance(falcon, ParsedMicrograph)
    assert falcon.micrograph.image is not None
    assert falcon.micrograph.image.fractionation is not None
    assert falcon.micrograph.image.fractionation.kind == "varidistant"
    assert falcon.micrograph.image.number_of_fractions == 22
    assert falcon.micrograph.image.beam_shift is not None


def test_fractions_file(epu_samples_dir: Path) -> None:
    result = _parse(
        epu_samples_dir, f"{AFIS}/FoilHole_5330585_Data_5338216_5338218_20200206_170645_Fractions.xml"
    )
    assert isinstance(result, ParsedFractions)
    assert result.micrograph_id == "FoilHole_5330585_Data_5338216_5338218_20200206_170645"
    fr = result.fractions
    assert (fr.detector, fr.file_version, fr.recorded_fractions, fr.fraction_count) == (
        "Falcon-3",
        "3.0.2.5809",
        22,
        22,
    )
    assert (fr.width_px, fr.height_px, fr.electron_counting) == (4096, 4096, True)
    assert fr.acquisition_datetime == datetime(2020, 2, 6, 17, 6, 49, 945000, tzinfo=CEST)


def test_foilhole_image_found_hole(epu_samples_dir: Path) -> None:
    result = _parse(
        epu_samples_dir,
        f"{EPU391}/Images-Disc1/GridSquare_8999138/FoilHoles/FoilHole_9015889_20250108_154715.xml",
    )
    assert isinstance(result, ParsedFoilHoleImage)
    hole = result.foilhole
    assert (hole.foilhole_id, hole.gridsquare_id) == ("9015889", "8999138")
    assert hole.image_timestamp == datetime(2025, 1, 8, 15, 47, 15)
    assert hole.found_hole is not None
    assert (hole.found_hole.center_x_px, hole.found_hole.center_y_px) == (1495.524, 1275.29517)
    assert hole.found_hole.width_px == pytest.approx(772.894165)
    assert hole.found_hole.quality == pytest.approx(0.80907285213470459)
    assert hole.image_stage_position is not None
    # The hole image at 3.4 has no FindFoilHoleCenterResults: optional.
    old = _parse(
        epu_samples_dir,
        f"{HARVEST_SESSION}/Images-Disc1/GridSquare_19493759/FoilHoles/FoilHole_19507368_20230919_142541.xml",
    )
    assert isinstance(old, ParsedFoilHoleImage)
    assert old.foilhole.found_hole is None


def test_atlas_37(epu_samples_dir: Path) -> None:
    result = _parse(epu_samples_dir, ATLAS37)
    assert isinstance(result, ParsedAtlas)
    atlas = result.atlas
    assert atlas.atlas_id == "3436163"  # the root Id comes first, not a nested one
    assert atlas.atlas_path == str(epu_samples_dir / ATLAS37)
    assert atlas.description == "Atlas for autoloader slot 4"
    assert atlas.gridatlas_version == "1.34.0.6930"
    assert atlas.image_base_filename == "Atlas_4590151"
    assert len(result.tiles) == 35 == atlas.tile_count
    assert len(result.gridsquares) == 222  # = the 222 grid squares of the matching EpuSession.dm
    assert len(result.positions) == 222
    tile = result.tiles[0]
    assert (tile.tile_id, tile.base_filename, tile.tile_index) == ("4590157", "Tile_4590157_0_4590151", 0)
    assert (tile.position_x_px, tile.position_y_px, tile.width_px, tile.height_px) == (1584, 1687, 833, 592)
    node = next(p for p in result.positions if p.gridsquare_id == "4590776")
    assert (node.center_x_px, node.center_y_px) == pytest.approx((1894.6, 852.1), abs=0.1)
    assert (round(node.size_width_px), round(node.size_height_px)) == (174, 172)
    square = next(s for s in result.gridsquares if s.gridsquare_id == "4590776")
    assert square.physical_width_m is not None
    assert 1e-5 < square.physical_width_m < 1e-4  # metres, not nanometres
    session = _parse(epu_samples_dir, f"{CHAIN}/EPU_session/EpuSession.dm")
    assert isinstance(session, ParsedSession)
    assert {s.gridsquare_id for s in result.gridsquares} == set(session.acquisition.gridsquare_ids)


def test_atlas_screening_tree(epu_samples_dir: Path) -> None:
    tileless = _parse(epu_samples_dir, f"{SCREENING}/Atlas/Atlas.dm")
    assert isinstance(tileless, ParsedAtlas)
    assert tileless.tiles == []
    atlas = _parse(epu_samples_dir, f"{SCREENING}/Sample2/Atlas/Atlas.dm")
    assert isinstance(atlas, ParsedAtlas)
    assert atlas.atlas.gridatlas_version == "1.31.0.5704"
    assert len(atlas.tiles) == 35
    tiles = sorted((epu_samples_dir / SCREENING / "Sample2" / "Atlas").glob("Tile_*.xml"))
    assert {t.stem for t in tiles} == {t.base_filename for t in atlas.tiles}
    tile = _parse(epu_samples_dir, str(tiles[0].relative_to(epu_samples_dir)))
    assert isinstance(tile, ParsedAtlasTile)
    assert tile.tile.image is not None
    assert tile.tile.image.software_name == "TemAppCommon"
    assert tile.tile.image.software_version == "5.14.0.5305"
    stitched = _parse(epu_samples_dir, f"{SCREENING}/Sample2/Atlas/Atlas_19493264.xml")
    assert isinstance(stitched, ParsedAtlasImage)
    assert stitched.atlas_id == "19493264"
    sample = _parse(epu_samples_dir, f"{SCREENING}/Sample2/Sample.dm")
    assert isinstance(sample, ParsedSample)
    assert (sample.sample.name, sample.sample.atlas_acquisition_status) == ("grid1", "Acquired")
    screening = _parse(epu_samples_dir, f"{SCREENING}/ScreeningSession.dm")
    assert isinstance(screening, ParsedScreeningSession)
    assert screening.screening.name == "Supervisor_20230919_115905_Atlas_bi23047-106"
    # FileName is a z:Ref after the first entry: every slot resolves to the referenced "Sample.dm".
    assert screening.screening.samples == dict.fromkeys((-1, 0, 1, 2, 3, 4), "Sample.dm")
    assert screening.screening.atlas is not None


def test_fast_and_dereferencing_image_readers_agree(epu_samples_dir: Path) -> None:
    from converters._xml import Reader, parse_xml
    from converters.parse import _image_metadata

    checked = 0
    for path in sorted(epu_samples_dir.rglob("*.xml")):
        info = classify_path(path)
        if info is None or info.kind is EpuFileKind.FRACTIONS:
            continue
        root = parse_xml(path.read_bytes(), path)
        fast = _image_metadata(Reader(root, path, has_refs=False), root)
        by_path = _image_metadata(Reader(root, path, has_refs=True), root)
        assert fast == by_path, path
        checked += 1
    assert checked == 194 + 140 + 5 + 4 + 4
