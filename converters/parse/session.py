"""``EpuSession.dm``: the acquisition and its grid."""

from __future__ import annotations

from converters._xml import (
    Reader,
    assembly_version,
    local_name,
)
from converters.models import (
    AcquisitionData,
    AcquisitionTemplateArea,
    GridData,
)
from converters.parse._common import (
    _EPU_TAGS,
    _T_ID,
    _epu_ns,
    _size,
)
from converters.parse.results import (
    ParsedSession,
)
from converters.paths import (
    EpuPath,
    PathMap,
    locate_atlas,
)


def _parse_session(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedSession:
    root = r.root
    ns = _epu_ns(r, root, "EpuSessionXml")

    e = _EPU_TAGS[ns]

    top = r.kids(root)
    session_id = r.require(top.get(_T_ID), root, _T_ID)
    name = r.require(top.get(e["Name"]), root, e["Name"])
    warnings: list[str] = []

    storage_path = None
    for folder in r.list_items(top.get(e["StorageFolders"])):
        storage_path = r.as_str(r.kids(folder).get(e["Path"]))
        if storage_path:
            break

    samples = r.list_items(top.get(e["Samples"]))
    if len(samples) > 1:
        warnings.append(f"{len(samples)} samples in the session; only the first is used")
    sample = r.kids(samples[0]) if samples else {}
    atlas_path = r.as_str(sample.get(e["AtlasId"])) or None
    gridsquare_ids = [r.require(key, key, "key") for key, _ in r.pairs(sample.get(e["GridSquares"]))]
    holes = r.kids(sample.get(e["FilterHolesSettings"]))
    template = r.kids(sample.get(e["TargetAreaTemplate"]))
    areas: list[AcquisitionTemplateArea] = []
    for key, value in r.pairs(template.get(e["DataAcquisitionAreas"])):
        setting_ids: list[str] = []
        defocus: list[float] = []
        exposure: float | None = None
        for setting in r.elements(value):
            if local_name(str(setting.tag)) != "ImageAcquisitionSettingXml":
                continue
            sk = r.kids(setting)
            sid = r.as_str(sk.get(_T_ID))
            if sid:
                setting_ids.append(sid)
            defocus.extend(v for d in r.elements(sk.get(e["Defocus"])) if (v := r.as_float(d)) is not None)
            exposure = r.as_float(sk.get(e["ExposureTime"]))
        areas.append(
            AcquisitionTemplateArea(
                area_id=r.require(key, key, "key"),
                setting_ids=setting_ids,
                defocus_values_m=defocus,
                exposure_time_s=exposure,
            )
        )
    template_pixel, _ = _size(r, template.get(e["TemplateImagePixelSize"]))

    session_root = info.session_root
    atlas_local = locate_atlas(atlas_path, session_root, path_map) if atlas_path else None
    if atlas_path and atlas_local is None:
        warnings.append(f"atlas {atlas_path} not found locally (configure a path map)")
    start = r.as_datetime(top.get(e["StartDateTime"]))
    end = r.as_datetime(sample.get(e["EndDateTime"]))
    acquisition = AcquisitionData(
        session_id=session_id,
        session_root=session_root,
        name=name,
        start_time=start,
        end_time=end,
        epu_version=assembly_version(root),
        storage_path=storage_path,
        atlas_path=atlas_path,
        atlas_local_path=str(atlas_local) if atlas_local else None,
        clustering_mode=r.as_str(top.get(e["ClusteringMode"])),
        clustering_radius_m=r.as_float(top.get(e["ClusteringRadius"])),
        image_file_format=r.as_str(top.get(e["ImageFileFormat"])),
        dose_fractions_output_format=r.as_str(top.get(e["DoseFractionsOutputFormat"])),
        autoloader_slot=r.as_int(top.get(e["AutoloaderSlot"])),
        autoloader_description=r.as_str(top.get(e["AutoloaderDescription"])),
        grid_type=r.as_str(sample.get(e["GridType"])),
        grid_geometry=r.as_str(sample.get(e["GridGeometry"])),
        hole_size_m=r.as_float(holes.get(e["HoleSize"])),
        hole_spacing_m=r.as_float(holes.get(e["HoleSpacing"])),
        sample_start_time=r.as_datetime(sample.get(e["StartDateTime"])),
        sample_end_time=end,
        template_pixel_size_m=template_pixel,
        template_areas=areas,
        gridsquare_ids=gridsquare_ids,
    )
    if atlas_local is not None:
        atlas_dir: str | None = str(atlas_local.parent)
    elif atlas_path:
        atlas_dir = atlas_path.replace("/", "\\").rpartition("\\")[0] or None
    else:
        atlas_dir = None
    grid = GridData(
        session_id=session_id,
        session_root=session_root,
        name=name,
        data_dir=session_root,
        atlas_dir=atlas_dir,
        atlas_path=atlas_path,
        atlas_local_path=acquisition.atlas_local_path,
        scan_start_time=start,
        scan_end_time=end,
    )
    return ParsedSession(path=info.path, epu_path=info, warnings=warnings, acquisition=acquisition, grid=grid)
