"""Merging partial models (newest foil-hole image wins, .dm fields kept) and EntityConverter output."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from converters import (
    EntityConverter,
    EpuFileKind,
    FoilHoleData,
    FoundHole,
    ImageMetadata,
    ParsedAtlas,
    ParsedFoilHoleImage,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSession,
    StagePosition,
    image_version,
    is_newer_foilhole_image,
    merge,
    parse_file,
    provided_fields,
)
from converters.models import GridSquareData
from converters.requests import (
    AcquisitionCreateRequest,
    FoilHoleCreateRequest,
    GridSquareCreateRequest,
    to_wire,
)

SMARTEM = "DiamondLightSource__smartem-decisions"
CHAIN = f"{SMARTEM}/docs/assets/metadata_spa_acquisition"
GS391 = f"{SMARTEM}/tests/testdata/epu-dir-example/Images-Disc1/GridSquare_8999186"


def _dm_hole() -> FoilHoleData:
    return FoilHoleData(
        foilhole_id="9028276",
        gridsquare_id="8999186",
        x_location_px=1396.4,
        y_location_px=972.0,
        width_px=51.28809,
        height_px=51.28809,
        stage_position=StagePosition(x_m=-4.2e-05, y_m=-5.5e-04, z_m=9.3e-05),
        is_near_grid_bar=True,
        quality=1.0,
    )


def _image_hole(ts: datetime, x: float) -> FoilHoleData:
    return FoilHoleData(
        foilhole_id="9028276",
        gridsquare_id="8999186",
        found_hole=FoundHole(center_x_px=x, center_y_px=10.0, width_px=770.0, height_px=771.0, quality=0.8),
        image_stage_position=StagePosition(x_m=1e-5, y_m=2e-5),
        image=ImageMetadata(software_version="3.9.1.8206"),
        image_timestamp=ts,
    )


def test_newest_foilhole_image_wins_and_dm_fields_survive() -> None:
    hole = _dm_hole().model_copy(update={"uuid": "u-1", "gridsquare_uuid": "g-1"})
    newer = _image_hole(datetime(2025, 1, 9, 6, 17, 22), 1500.0)
    older = _image_hole(datetime(2025, 1, 9, 6, 17, 12), 1400.0)
    merged = merge(merge(hole, newer, EpuFileKind.FOILHOLE_IMAGE), older, EpuFileKind.FOILHOLE_IMAGE)
    assert merged.found_hole is not None
    assert merged.found_hole.center_x_px == 1500.0  # the older image, arriving late, lost
    assert merged.image_timestamp == datetime(2025, 1, 9, 6, 17, 22)
    assert (merged.x_location_px, merged.width_px, merged.is_near_grid_bar) == (1396.4, 51.28809, True)
    assert merged.uuid == "u-1"
    # A later .dm rewrite updates the .dm fields and keeps the image fields.
    rewritten = _dm_hole().model_copy(update={"state": "Completed", "is_near_grid_bar": False})
    again = merge(merged, rewritten, EpuFileKind.GRIDSQUARE_METADATA)
    assert again.state == "Completed"
    assert again.is_near_grid_bar is False
    assert again.found_hole == merged.found_hole
    request = EntityConverter.foilhole_to_request(again)
    assert isinstance(request, FoilHoleCreateRequest)
    assert (request.x_location, request.y_location, request.diameter) == (1396, 972, 51)
    assert (request.center_x, request.size_width, request.quality) == (1500.0, 770.0, 0.8)
    assert (request.x_stage_position, request.y_stage_position) == (1e-5, 2e-5)  # newest image's stage


def test_merge_rejects_other_entities_and_lists_fields() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge(_dm_hole(), _dm_hole().model_copy(update={"foilhole_id": "1"}), EpuFileKind.GRIDSQUARE_METADATA)
    assert "x_location_px" in provided_fields(FoilHoleData, EpuFileKind.GRIDSQUARE_METADATA)
    assert "x_location_px" not in provided_fields(FoilHoleData, EpuFileKind.FOILHOLE_IMAGE)
    assert "found_hole" in provided_fields(FoilHoleData, EpuFileKind.FOILHOLE_IMAGE)
    assert provided_fields(FoilHoleData, EpuFileKind.ATLAS) == frozenset()


def test_missing_uuid_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="foil hole 9028276 uuid is not set"):
        EntityConverter.foilhole_to_request(_dm_hole())


@pytest.mark.samples
def test_real_duplicate_foilhole_images(epu_samples_dir: Path) -> None:
    first = parse_file(epu_samples_dir / GS391 / "FoilHoles" / "FoilHole_9028276_20250109_061712.xml")
    second = parse_file(epu_samples_dir / GS391 / "FoilHoles" / "FoilHole_9028276_20250109_061722.xml")
    assert isinstance(first, ParsedFoilHoleImage)
    assert isinstance(second, ParsedFoilHoleImage)
    base = _dm_hole()
    for order in ((first, second), (second, first)):
        hole = base
        for parsed in order:
            hole = merge(hole, parsed.foilhole, EpuFileKind.FOILHOLE_IMAGE)
        assert hole.image_path == second.path
        assert hole.found_hole == second.foilhole.found_hole
        assert hole.x_location_px == 1396.4


@pytest.mark.samples
def test_convert_real_chain(epu_samples_dir: Path) -> None:
    session = parse_file(epu_samples_dir / CHAIN / "EPU_session" / "EpuSession.dm")
    assert isinstance(session, ParsedSession)
    acq = session.acquisition.model_copy(update={"uuid": "a-1"})
    request = EntityConverter.acquisition_to_request(acq)
    assert isinstance(request, AcquisitionCreateRequest)
    wire = to_wire(request)
    assert wire["name"] == "Supervisor_20240405_115113_0_SmartEPU_ApoF"
    assert wire["status"] == "started"
    assert wire["start_time"].startswith("2024-04-05T11:36:47.228544")
    assert wire["clustering_radius"] == "0.0"
    grid = EntityConverter.grid_to_request(
        session.grid.model_copy(update={"uuid": "g-1", "acquisition_uuid": "a-1"}), lowmag=True
    )
    assert grid.name == acq.name
    assert grid.atlas_dir is not None

    meta = parse_file(epu_samples_dir / CHAIN / "GridSquare_4590776.dm")
    atlas = parse_file(
        epu_samples_dir
        / CHAIN
        / "Atlas/Supervisor_20240404_093820_Pete_Miriam_HexAuFoil/Sample4/Atlas/Atlas.dm"
    )
    image = parse_file(
        epu_samples_dir / CHAIN / "EPU_session/Images-Disc1/GridSquare_4590776/GridSquare_20240406_102420.xml"
    )
    assert isinstance(meta, ParsedGridSquareMetadata)
    assert isinstance(atlas, ParsedAtlas)
    assert isinstance(image, ParsedGridSquareImage)
    assert image.gridsquare is not None
    square = meta.gridsquare.model_copy(update={"uuid": "s-1", "grid_uuid": "g-1"})
    node = next(s for s in atlas.gridsquares if s.gridsquare_id == "4590776")
    square = merge(square, node, EpuFileKind.ATLAS)
    square = merge(square, image.gridsquare, EpuFileKind.GRIDSQUARE_IMAGE)
    assert isinstance(square, GridSquareData)
    gs = EntityConverter.gridsquare_to_request(square)
    assert isinstance(gs, GridSquareCreateRequest)
    assert (gs.gridsquare_id, gs.atlas_node_id, gs.state, gs.selected) == (
        "4590776",
        4590776,
        "InProgress",
        True,
    )
    assert gs.stage_position_x == pytest.approx(-4.9194160965271294e-05)  # metres, as the wire expects
    assert (gs.center_x, gs.center_y, gs.size_width, gs.size_height) == (1895, 852, 174, 172)
    assert gs.physical_x is not None
    assert abs(gs.physical_x) < 1e-2  # metres, not nm
    assert gs.pixel_size == pytest.approx(4.156276034450457e-08)
    assert gs.magnification == 470.0
    assert gs.detector_name == "BioQuantum K3"
    assert gs.acquisition_datetime is not None

    holes = [
        h.model_copy(update={"uuid": f"h-{h.foilhole_id}", "gridsquare_uuid": "s-1"}) for h in meta.foilholes
    ]
    requests = [EntityConverter.foilhole_to_request(h) for h in holes]
    assert len(requests) == 570
    assert any(r.is_near_grid_bar for r in requests)

    atlas_data = atlas.atlas.model_copy(
        update={
            "uuid": "at-1",
            "grid_uuid": "g-1",
            "tiles": [t.model_copy(update={"uuid": f"t-{t.tile_id}"}) for t in atlas.tiles],
        }
    )
    atlas_request = EntityConverter.atlas_to_request(atlas_data)
    assert atlas_request.tiles is not None
    assert len(atlas_request.tiles) == 35
    assert atlas_request.tiles[0].atlas_uuid == "at-1"
    assert (atlas_request.tiles[0].position_x, atlas_request.tiles[0].size_x) == (1584, 833)
    position = next(p for p in atlas.positions if p.gridsquare_id == "4590776")
    link = EntityConverter.tile_position_to_request(position.model_copy(update={"gridsquare_uuid": "s-1"}))
    assert (link.center_x, link.center_y, link.size_width, link.size_height) == (1895, 852, 174, 172)


@pytest.mark.samples
def test_convert_micrograph(epu_samples_dir: Path) -> None:
    parsed = parse_file(
        epu_samples_dir / GS391 / "Data" / "FoilHole_9028219_Data_9017347_50_20250109_062621.xml"
    )
    assert isinstance(parsed, ParsedMicrograph)
    mic = parsed.micrograph.model_copy(update={"uuid": "m-1", "foilhole_uuid": "h-1"})
    request = EntityConverter.micrograph_to_request(mic)
    assert request.foilhole_id == "9028219"
    assert request.location_id == "9017347"
    assert (request.image_size_x, request.image_size_y, request.binning_x) == (2880, 2046, 2)
    assert request.detector_name == "BioQuantum K3"
    assert request.energy_filter is True
    assert request.phase_plate is False
    assert request.defocus is not None
    assert abs(request.defocus) < 1e-4  # metres
    assert request.manifest_file == parsed.path
    assert request.status == "none"


def test_image_version_orders_name_timestamps_and_a_rewrite_counts_as_newer() -> None:
    early, late = datetime(2025, 1, 9, 6, 17, 12), datetime(2025, 1, 9, 6, 17, 12, 500000)
    assert image_version(early) < image_version(late) < image_version(datetime(2025, 1, 9, 6, 17, 13))
    assert image_version(None) < image_version(early)  # a name without a timestamp is older than any
    assert is_newer_foilhole_image(_image_hole(early, 1.0), _image_hole(early, 2.0))  # same file rewritten
    assert not is_newer_foilhole_image(_image_hole(late, 1.0), _image_hole(early, 2.0))
