"""Observing an EPU folder through ``converters`` (merging partial models the way the agent does), as manifest
:data:`~testbed.epu.compare_records.Records`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from converters import (
    AtlasData,
    AtlasTileData,
    ConverterError,
    FoilHoleData,
    GridSquareData,
    MicrographData,
    ParsedAtlas,
    ParsedFoilHoleImage,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSession,
    classify_path,
    merge,
    parse_file,
)
from converters.paths import EpuFileKind
from testbed.epu.compare_records import Key, Records, sorted_positions
from testbed.epu.manifest import KINDS


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def observe_files(
    root: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None
) -> Records:
    """Parse EPU files under ``root`` (all of them, or ``files``) with ``converters``; return manifest-shaped
    records.

    Entities are keyed by the session folder relative to ``root``. Partial models are merged with
    ``converters.merge`` (newest foil-hole image wins), as the agent does. Files that fail to parse raise.
    """
    base = Path(root).resolve()
    paths = (
        sorted(Path(p) for p in files)
        if files is not None
        else sorted(p for p in base.rglob("*") if p.is_file())
    )
    sessions: list[ParsedSession] = []
    atlases: list[ParsedAtlas] = []
    squares: dict[Key, GridSquareData] = {}
    holes: dict[Key, FoilHoleData] = {}
    micrographs: dict[Key, MicrographData] = {}
    atlas_squares: list[tuple[str, GridSquareData]] = []

    def upsert(store: dict[Key, Any], key: Key, model: Any, kind: EpuFileKind) -> None:
        store[key] = merge(store[key], model, kind) if key in store else model

    for path in paths:
        info = classify_path(path)
        if info is None:
            continue
        try:
            parsed = parse_file(path, epu_path=info)
        except ConverterError as exc:
            raise ValueError(f"generated file does not parse: {path}: {exc}") from exc
        if isinstance(parsed, ParsedSession):
            sessions.append(parsed)
        elif isinstance(parsed, ParsedAtlas):
            atlases.append(parsed)
        elif isinstance(parsed, ParsedGridSquareMetadata):
            akey = _rel(parsed.gridsquare.session_root, base) or ""
            upsert(
                squares,
                (akey, parsed.gridsquare.gridsquare_id),
                parsed.gridsquare,
                EpuFileKind.GRIDSQUARE_METADATA,
            )
            for hole in parsed.foilholes:
                upsert(holes, (akey, hole.foilhole_id), hole, EpuFileKind.GRIDSQUARE_METADATA)
        elif isinstance(parsed, ParsedGridSquareImage) and parsed.gridsquare is not None:
            akey = _rel(parsed.gridsquare.session_root, base) or ""
            upsert(
                squares,
                (akey, parsed.gridsquare.gridsquare_id),
                parsed.gridsquare,
                EpuFileKind.GRIDSQUARE_IMAGE,
            )
        elif isinstance(parsed, ParsedFoilHoleImage):
            akey = _rel(parsed.foilhole.session_root or info.session_root, base) or ""
            upsert(holes, (akey, parsed.foilhole.foilhole_id), parsed.foilhole, EpuFileKind.FOILHOLE_IMAGE)
        elif isinstance(parsed, ParsedMicrograph):
            akey = _rel(parsed.micrograph.session_root, base) or ""
            upsert(
                micrographs,
                (akey, parsed.micrograph.micrograph_id),
                parsed.micrograph,
                EpuFileKind.MICROGRAPH,
            )

    records: Records = {kind: {} for kind in KINDS}
    atlas_owner: dict[str, str] = {}
    for session in sessions:
        acq, grid = session.acquisition, session.grid
        akey = _rel(acq.session_root, base) or ""
        records["acquisition"][(akey, akey)] = {
            "name": acq.name,
            "session_id": acq.session_id,
            "start_time": acq.start_time,
            "storage_path": acq.storage_path,
            "atlas_path": acq.atlas_path,
            "clustering_mode": acq.clustering_mode,
            "epu_version": acq.epu_version,
        }
        records["grid"][(akey, akey)] = {
            "name": grid.name,
            "data_dir": _rel(grid.data_dir, base),
            "atlas_dir": _rel(grid.atlas_dir, base),
            "scan_start_time": grid.scan_start_time,
        }
        if acq.atlas_local_path:
            atlas_owner[str(Path(acq.atlas_local_path).resolve())] = akey
    for parsed in atlases:
        atlas = parsed.atlas
        owner = atlas_owner.get(str(Path(atlas.atlas_path).resolve())) if atlas.atlas_path else None
        if owner is None:
            continue  # an atlas no session points to (the screening session's own) is not an entity to post
        records["atlas"][(owner, atlas.atlas_id)] = _atlas_record(atlas, base)
        for tile in atlas.tiles:
            records["atlas_tile"][(owner, tile.tile_id)] = _tile_record(tile)
        atlas_squares.extend((owner, sq) for sq in parsed.gridsquares)
    for owner, square in atlas_squares:
        upsert(squares, (owner, square.gridsquare_id), square, EpuFileKind.ATLAS)
    for key, square in squares.items():
        records["gridsquare"][key] = _square_record(square)
    for key, hole in holes.items():
        records["foilhole"][key] = _hole_record(hole)
    for key, mic in micrographs.items():
        records["micrograph"][key] = _micrograph_record(mic)
    return records


def _atlas_record(atlas: AtlasData, base: Path) -> dict[str, Any]:
    return {
        "atlas_id": atlas.atlas_id,
        "name": atlas.name,
        "description": atlas.description,
        "acquisition_date": atlas.acquisition_datetime,
        "storage_folder": atlas.storage_folder,
        "path": _rel(atlas.atlas_path, base),
        "tile_count": atlas.tile_count,
    }


def _tile_record(tile: AtlasTileData) -> dict[str, Any]:
    return {
        "atlas_id": tile.atlas_id,
        "tile_index": tile.tile_index,
        "position_x": tile.position_x_px,
        "position_y": tile.position_y_px,
        "size_x": tile.width_px,
        "size_y": tile.height_px,
        "file_format": tile.file_format,
        "base_filename": tile.base_filename,
        "gridsquares": sorted_positions(
            (p.gridsquare_id, p.center_x_px, p.center_y_px, p.size_width_px, p.size_height_px)
            for p in tile.gridsquare_positions
        ),
    }


def _put(record: dict[str, Any], name: str, value: Any) -> None:
    """Only fields the files actually provided are compared."""
    if value is not None:
        record[name] = value


def _square_record(square: GridSquareData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    stage = square.stage_position
    image = square.image
    for name, value in (
        ("atlas_node_id", square.atlas_node_id),
        ("state", square.state),
        ("selected", square.selected),
        ("unusable", square.unusable),
        ("rotation", square.rotation_rad),
        ("stage_position_x", stage.x_m if stage else None),
        ("stage_position_y", stage.y_m if stage else None),
        ("stage_position_z", stage.z_m if stage else None),
        ("center_x", square.center_x_px),
        ("center_y", square.center_y_px),
        ("size_width", square.size_width_px),
        ("size_height", square.size_height_px),
        ("physical_x", square.physical_x_m),
        ("physical_y", square.physical_y_m),
        ("tile_id", square.tile_id),
        ("acquisition_datetime", image.acquisition_datetime if image else None),
        ("defocus", image.defocus_m if image else None),
        ("applied_defocus", image.applied_defocus_m if image else None),
        ("magnification", image.nominal_magnification if image else None),
        ("pixel_size", image.pixel_size_x_m if image else None),
        ("detector_name", image.detector_name if image else None),
        ("foilhole_count", square.foilhole_count),
    ):
        _put(record, name, value)
    return record


def _hole_record(hole: FoilHoleData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    stage = hole.stage_position
    found = hole.found_hole
    for name, value in (
        ("gridsquare_id", hole.gridsquare_id),
        ("center_x", hole.x_location_px),
        ("center_y", hole.y_location_px),
        ("size_width", hole.width_px),
        ("size_height", hole.height_px),
        ("x_stage_position", stage.x_m if stage else None),
        ("y_stage_position", stage.y_m if stage else None),
        ("quality", hole.quality),
        ("is_near_grid_bar", hole.is_near_grid_bar),
        ("selected", hole.selected),
        ("state", hole.state),
        ("found_center_x", found.center_x_px if found else None),
        ("found_center_y", found.center_y_px if found else None),
        ("found_size", found.width_px if found else None),
        ("found_quality", found.quality if found else None),
    ):
        _put(record, name, value)
    return record


def _micrograph_record(mic: MicrographData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    image = mic.image
    for name, value in (
        ("foilhole_id", mic.foilhole_id),
        ("gridsquare_id", mic.gridsquare_id),
        ("location_id", mic.location_id),
        ("setting_id", mic.setting_id),
        ("unique_id", image.unique_id if image else None),
        ("acquisition_datetime", image.acquisition_datetime if image else None),
        ("defocus", image.defocus_m if image else None),
        ("applied_defocus", image.applied_defocus_m if image else None),
        ("detector_name", image.detector_name if image else None),
        ("detector_commercial_name", image.detector_commercial_name if image else None),
        ("energy_filter", image.energy_filter_on if image else None),
        ("phase_plate", image.phase_plate_used if image else None),
        ("image_size_x", image.image_width_px if image else None),
        ("image_size_y", image.image_height_px if image else None),
        ("binning_x", image.binning_x if image else None),
        ("binning_y", image.binning_y if image else None),
        ("pixel_size", image.pixel_size_x_m if image else None),
        ("exposure_time", image.exposure_time_s if image else None),
        ("dose", image.dose_e_per_m2 if image else None),
    ):
        _put(record, name, value)
    return record


__all__ = ["observe_files"]
