"""Atlas files: ``Atlas.dm`` (atlas, tiles, tile/square positions), the atlas and tile image XMLs, and the
``Sample.dm`` / ``ScreeningSession.dm`` beside them (a screening session may embed an atlas)."""

from __future__ import annotations

from pathlib import Path, PurePath

from converters._xml import (
    NS_AA,
    NS_GA,
    NS_SCR,
    Element,
    Reader,
    assembly_version,
    local_name,
    q,
)
from converters.models import (
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    GridSquareData,
    SampleData,
    ScreeningSessionData,
)
from converters.parse._common import (
    _GA_TAGS,
    _GAD_CENTER,
    _GAD_PHYSICAL,
    _GAD_QUALITY,
    _GAD_ROTATION,
    _GAD_SIZE,
    _SCR_TAGS,
    _T_BASE,
    _T_FILENAME,
    _T_FORMAT,
    _T_ID,
    _int_or_none,
    _point,
    _rect,
    _size,
    _stage,
)
from converters.parse.image import _image_metadata
from converters.parse.results import (
    ParsedAtlas,
    ParsedAtlasImage,
    ParsedAtlasTile,
    ParsedSample,
    ParsedScreeningSession,
)
from converters.paths import (
    EpuPath,
    PathMap,
)


def _parse_atlas_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlasImage:
    image = _image_metadata(r, r.root)
    atlas_id = info.atlas_id or PurePath(info.path).stem.partition("_")[2]
    return ParsedAtlasImage(path=info.path, epu_path=info, atlas_id=atlas_id, image=image)


def _parse_tile_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlasTile:
    image = _image_metadata(r, r.root)
    if info.tile_id is None or info.atlas_id is None:  # pragma: no cover - set by classify_path
        raise r.malformed("tile image without tile/atlas ids in its name", r.root)
    atlas_path = str(Path(info.atlas_root) / "Atlas.dm") if info.atlas_root else None
    tile = AtlasTileData(
        tile_id=info.tile_id,
        atlas_id=info.atlas_id,
        atlas_path=atlas_path,
        tile_index=info.tile_index,
        base_filename=PurePath(info.path).stem,
        stage_position=image.stage_position,
        image=image,
    )
    return ParsedAtlasTile(path=info.path, epu_path=info, tile=tile)


# ------------------------------------------------------------------------------------------------------------
# Atlas.dm, Sample.dm, ScreeningSession.dm
# ------------------------------------------------------------------------------------------------------------


def _atlas_from_session(
    r: Reader, session: Element, atlas_path: str | None, warnings: list[str]
) -> tuple[AtlasData, list[GridSquareData]]:
    """Read an ``AtlasSessionXml``-shaped element (``Atlas.dm`` root, or embedded in a screening session)."""

    g = _GA_TAGS

    top = r.kids(session)
    atlas_id = r.require(top.get(_T_ID), session, _T_ID)
    atlas = r.kids(top.get(g["Atlas"]))
    image_ref = r.kids(atlas.get(g["AtlasImageReference"]))
    alignment = r.kids(atlas.get(g["AtlasAlignmentTransformation"]))
    tiles: list[AtlasTileData] = []
    squares: list[GridSquareData] = []
    for tile_el in r.list_items(atlas.get(g["TilesEfficient"])):
        tk = r.kids(tile_el)
        tile_id = r.require(tk.get(_T_ID), tile_el, _T_ID)
        px, py, pw, ph = _rect(r, tk.get(g["AtlasPixelPosition"]))
        ref = r.kids(tk.get(g["TileImageReference"]))
        base = r.as_str(ref.get(_T_BASE))
        index = None
        if base:
            fields = base.split("_")
            if len(fields) == 4 and fields[2].isdigit():
                index = int(fields[2])
        positions: list[AtlasTileGridSquarePositionData] = []
        for key, node in r.pairs(tk.get(g["Nodes"])):
            gs_id = r.require(key, key, "key")
            if node is None:
                warnings.append(f"atlas node {gs_id} on tile {tile_id} is nil")
                continue
            nk = r.kids(node)
            where = r.kids(nk.get(g["PositionOnTheAtlas"]))
            cx, cy = _point(r, where.get(_GAD_CENTER))
            sw, sh = _size(r, where.get(_GAD_SIZE))
            phys_x, phys_y, phys_w, phys_h = _rect(r, where.get(_GAD_PHYSICAL))
            tile_pos: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)
            for tp in r.list_items(nk.get(g["TilePositions"])):
                tpk = r.kids(tp)
                if r.as_str(tpk.get(g["TileId"])) == tile_id:
                    node_pos = r.kids(tpk.get(g["NodePosition"]))
                    tile_pos = (
                        *_point(r, node_pos.get(_GAD_CENTER)),
                        *_size(r, node_pos.get(_GAD_SIZE)),
                    )
                    break
            category = r.as_str(nk.get(g["Category"]))
            squares.append(
                GridSquareData(
                    gridsquare_id=gs_id,
                    atlas_id=atlas_id,
                    tile_id=tile_id,
                    center_x_px=cx,
                    center_y_px=cy,
                    size_width_px=sw,
                    size_height_px=sh,
                    physical_x_m=phys_x,
                    physical_y_m=phys_y,
                    physical_width_m=phys_w,
                    physical_height_m=phys_h,
                    atlas_rotation_rad=r.as_float(where.get(_GAD_ROTATION)),
                    atlas_quality=r.as_float(where.get(_GAD_QUALITY)),
                    atlas_category=category,
                    atlas_stage_position=_stage(r, nk.get(g["StagePosition"])),
                    aligned_stage_position=_stage(r, nk.get(g["AlignedStagePosition"])),
                )
            )
            if cx is None or cy is None or sw is None or sh is None:
                # One odd node must not fail the whole atlas (the reference agent crashes here).
                warnings.append(
                    f"atlas node {gs_id} on tile {tile_id} has no centre/size; not linked to the tile"
                )
                continue
            positions.append(
                AtlasTileGridSquarePositionData(
                    tile_id=tile_id,
                    gridsquare_id=gs_id,
                    atlas_id=atlas_id,
                    center_x_px=cx,
                    center_y_px=cy,
                    size_width_px=sw,
                    size_height_px=sh,
                    tile_center_x_px=tile_pos[0],
                    tile_center_y_px=tile_pos[1],
                    tile_size_width_px=tile_pos[2],
                    tile_size_height_px=tile_pos[3],
                )
            )
        tiles.append(
            AtlasTileData(
                tile_id=tile_id,
                atlas_id=atlas_id,
                atlas_path=atlas_path,
                position_x_px=_int_or_none(px),
                position_y_px=_int_or_none(py),
                width_px=_int_or_none(pw),
                height_px=_int_or_none(ph),
                stage_position=_stage(r, tk.get(g["StagePosition"])),
                base_filename=base,
                file_format=r.as_str(ref.get(_T_FORMAT)),
                tile_index=index,
                gridsquare_positions=positions,
            )
        )
    data = AtlasData(
        atlas_id=atlas_id,
        atlas_path=atlas_path,
        name=r.as_str(top.get(g["Name"])) or "Atlas",
        description=r.as_str(top.get(g["Description"])),
        start_time=r.as_datetime(top.get(g["StartDateTime"])),
        acquisition_datetime=r.as_datetime(atlas.get(g["AcquisitionDateTime"])),
        storage_folder=r.as_str(top.get(g["StorageFolder"])),
        image_base_filename=r.as_str(image_ref.get(_T_BASE)),
        image_file_format=r.as_str(image_ref.get(_T_FORMAT)),
        alignment_rotation_rad=r.as_float(alignment.get(q(NS_AA, "Rotation"))),
        tile_count=len(tiles),
        tiles=tiles,
    )
    return data, squares


def _parse_atlas(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlas:
    root = r.root
    if root.tag != q(NS_GA, "AtlasSessionXml"):
        raise r.malformed(f"expected root AtlasSessionXml, found {local_name(str(root.tag))}", root)
    warnings: list[str] = []
    atlas, squares = _atlas_from_session(r, root, info.path, warnings)
    atlas.gridatlas_version = assembly_version(root)
    return ParsedAtlas(path=info.path, epu_path=info, warnings=warnings, atlas=atlas, gridsquares=squares)


def _parse_sample(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedSample:
    root = r.root
    if root.tag != q(NS_SCR, "SampleXml"):
        raise r.malformed(f"expected root SampleXml, found {local_name(str(root.tag))}", root)

    s = _SCR_TAGS

    top = r.kids(root)
    sample = SampleData(
        sample_id=r.require(top.get(_T_ID), root, _T_ID),
        name=r.as_str(top.get(s["Name"])),
        slot_id=r.as_int(top.get(s["SlotId"])),
        atlas_acquisition_status=r.as_str(top.get(s["AtlasAcquisitionStatus"])),
        acquired_atlas_available=r.as_bool(top.get(s["AcquiredAtlasAvailable"])),
        specimen_carrier_type=r.as_str(top.get(s["SpecimenCarrierType"])),
        storage_folder=r.as_str(top.get(s["AtlasSessionStorageFolder"])),
        atlas_path=str(Path(info.atlas_root) / "Atlas.dm") if info.atlas_root else None,
    )
    return ParsedSample(path=info.path, epu_path=info, sample=sample)


def _parse_screening(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedScreeningSession:
    root = r.root
    if root.tag != q(NS_SCR, "ScreeningSessionXml"):
        raise r.malformed(f"expected root ScreeningSessionXml, found {local_name(str(root.tag))}", root)

    s = _SCR_TAGS

    top = r.kids(root)
    warnings: list[str] = []
    samples: dict[int, str] = {}
    outer = r.kids(top.get(s["Samples"]))
    for key, value in r.pairs(outer.get(q(NS_GA, "Samples"))):
        slot = r.as_int(key)
        file_name = r.as_str(r.kids(value).get(_T_FILENAME)) if value is not None else None
        if slot is not None and file_name:
            samples[slot] = file_name
    embedded = top.get(s["AtlasSession"])
    atlas = None
    if embedded is not None and not r.is_nil(r.deref(embedded)):
        atlas_path = str(Path(info.atlas_root) / "Atlas" / "Atlas.dm") if info.atlas_root else None
        atlas, _ = _atlas_from_session(r, r.deref(embedded), atlas_path, warnings)
    screening = ScreeningSessionData(
        screening_id=r.require(top.get(_T_ID), root, _T_ID),
        name=r.as_str(top.get(s["Name"])),
        start_time=r.as_datetime(top.get(s["StartDateTime"])),
        storage_folder=r.as_str(top.get(s["StorageFolder"])),
        samples=samples,
        atlas=atlas,
    )
    return ParsedScreeningSession(path=info.path, epu_path=info, warnings=warnings, screening=screening)
