"""Grid-square files: ``Metadata/GridSquare_<id>.dm`` (the square and its foil holes) and the grid-square
image XML."""

from __future__ import annotations

from converters._xml import (
    NS_SAT,
    Element,
    Reader,
    q,
)
from converters.models import (
    FoilHoleData,
    GridSquareData,
)
from converters.parse._common import (
    _EPU_TAGS,
    _T_BASE,
    _T_ID,
    _epu_ns,
    _point,
    _size,
    _stage,
)
from converters.parse.image import _image_metadata
from converters.parse.results import (
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
)
from converters.paths import (
    EpuPath,
    PathMap,
)


def _foilhole_from_dm(
    r: Reader, ns: str, key: Element, value: Element, gridsquare_id: str, session_root: str | None
) -> FoilHoleData:
    e = _EPU_TAGS[ns]

    hk = r.kids(value)
    fh_id = r.as_str(hk.get(_T_ID)) or r.require(key, key, "key")
    parent = r.as_str(hk.get(e["GridSquareId"])) or gridsquare_id
    if parent != gridsquare_id:
        raise r.malformed(f"foil hole {fh_id} says grid square {parent}, file is {gridsquare_id}", value)
    cx, cy = _point(r, hk.get(e["PixelCenter"]))
    w, h = _size(r, hk.get(e["PixelWidthHeight"]))
    micrographs: list[str] = []
    for _, pa in r.pairs(hk.get(e["ParticleAcquisitions"])):
        base = r.as_str(r.kids(r.kids(pa).get(e["Image"])).get(_T_BASE))
        if base:
            micrographs.append(base)
    return FoilHoleData(
        foilhole_id=fh_id,
        gridsquare_id=gridsquare_id,
        session_root=session_root,
        x_location_px=cx,
        y_location_px=cy,
        width_px=w,
        height_px=h,
        stage_position=_stage(r, hk.get(e["StagePosition"])),
        is_near_grid_bar=r.as_bool(hk.get(e["IsNearGridBar"])),
        selected=r.as_bool(hk.get(e["Selected"])),
        state=r.as_str(hk.get(e["State"])),
        quality=r.as_float(hk.get(e["Quality"])),
        rotation_rad=r.as_float(hk.get(e["Rotation"])),
        image_base_filename=r.as_str(r.kids(hk.get(e["Image"])).get(_T_BASE)),
        micrograph_ids=micrographs,
    )


def _parse_gridsquare_dm(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedGridSquareMetadata:
    root = r.root
    ns = _epu_ns(r, root, "GridSquareXml")

    e = _EPU_TAGS[ns]

    top = r.kids(root)
    gs_id = r.require(top.get(_T_ID), root, _T_ID)
    if info.gridsquare_id is not None and info.gridsquare_id != gs_id:
        raise r.malformed(
            f"file name says grid square {info.gridsquare_id}, content says {gs_id}", root, _T_ID
        )
    warnings: list[str] = []
    shape = r.kids(top.get(e["GridSquareShape"]))
    center_x, center_y = _point(r, shape.get(q(NS_SAT, "center")))
    vertices: list[tuple[float, float]] = []
    for point in r.list_items(shape.get(q(NS_SAT, "vertices"))) or list(
        r.elements(shape.get(q(NS_SAT, "vertices")))
    ):
        px, py = _point(r, point)
        if px is not None and py is not None:
            vertices.append((px, py))

    holes: list[FoilHoleData] = []
    locations = r.kids(top.get(e["TargetLocations"]))
    efficient = locations.get(e["TargetLocationsEfficient"])
    session_root = info.session_root
    if efficient is not None and not r.is_nil(r.deref(efficient)):
        for key, value in r.pairs(efficient):
            if value is not None:
                holes.append(_foilhole_from_dm(r, ns, key, value, gs_id, session_root))
    else:
        fallback = locations.get(e["TargetLocations"])
        if fallback is not None and not r.is_nil(r.deref(fallback)):
            # Lacey grids (unconfirmed on real files): holes said to sit under
            # TargetLocations/TargetLocations.
            warnings.append("holes read from TargetLocations/TargetLocations (lacey-grid fallback)")
            entries = list(r.pairs(fallback))
            if entries:
                for key, value in entries:
                    if value is not None:
                        holes.append(_foilhole_from_dm(r, ns, key, value, gs_id, session_root))
            else:
                for item in r.list_items(fallback):
                    id_el = r.kids(item).get(_T_ID)
                    if id_el is None:
                        raise r.malformed("target location without an Id", item, _T_ID)
                    holes.append(_foilhole_from_dm(r, ns, id_el, item, gs_id, session_root))

    square = GridSquareData(
        gridsquare_id=gs_id,
        session_root=session_root,
        atlas_node_id=r.as_int(top.get(e["AtlasNodeId"])),
        state=r.as_str(top.get(e["State"])),
        selected=r.as_bool(top.get(e["Selected"])),
        unusable=r.as_bool(top.get(e["Unusable"])),
        order=r.as_int(top.get(e["Order"])),
        rotation_rad=r.as_float(top.get(e["Rotation"])),
        stage_position=_stage(r, top.get(e["Position"])),
        hole_spacing_m=r.as_float(top.get(e["HoleSpacing"])),
        image_base_filename=r.as_str(r.kids(top.get(e["Image"])).get(_T_BASE)),
        image_path=r.as_str(top.get(e["GridSquareImagePath"])),
        outline_center_x_px=center_x,
        outline_center_y_px=center_y,
        outline_vertices_px=vertices,
        foilhole_count=len(holes),
    )
    return ParsedGridSquareMetadata(
        path=info.path, epu_path=info, warnings=warnings, gridsquare=square, foilholes=holes
    )


def _parse_gridsquare_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedGridSquareImage:
    image = _image_metadata(r, r.root)
    square = None
    if info.gridsquare_id is not None:
        square = GridSquareData(
            gridsquare_id=info.gridsquare_id,
            session_root=info.session_root,
            image=image,
            image_timestamp=info.timestamp,
            image_path=info.path,
        )
    return ParsedGridSquareImage(path=info.path, epu_path=info, image=image, gridsquare=square)
