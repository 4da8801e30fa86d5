"""Derive the ground-truth :class:`~testbed.epu.manifest.Manifest` of a session plan and its file writes.

The manifest model itself lives in :mod:`testbed.epu.manifest`; the writes in :mod:`testbed.epu.file_ops`.
"""

from __future__ import annotations

from testbed.epu.file_ops import FileOp
from testbed.epu.manifest import (
    Manifest,
    ManifestAcquisition,
    ManifestAtlas,
    ManifestAtlasTile,
    ManifestFoilHole,
    ManifestGrid,
    ManifestGridSquare,
    ManifestMicrograph,
    ManifestTileSquarePosition,
)
from testbed.epu.plan import (
    CAMERA_NAME,
    COMPUTER_NAME,
    DETECTOR_COMMERCIAL_NAME,
    EPU_VERSION,
    INSTRUMENT_ID,
    INSTRUMENT_MODEL,
    READOUT_H,
    READOUT_W,
    GridPlan,
    SessionPlan,
)


def build_manifest(plan: SessionPlan, ops: list[FileOp]) -> Manifest:
    """The ground truth of ``plan`` (see :mod:`testbed.epu.manifest`)."""
    files: dict[str, int] = {}
    seen: set[str] = set()
    for op in ops:
        if op.rel_path not in seen:
            seen.add(op.rel_path)
            files[op.kind] = files.get(op.kind, 0) + 1
    manifest = Manifest(
        preset=plan.preset,
        seed=plan.seed,
        grids_count=len(plan.grids),
        storage_path=plan.storage_windows,
        files=dict(sorted(files.items())),
        total_files=len(seen),
    )
    for grid in plan.grids:
        _grid_manifest(plan, grid, manifest)
    return manifest


def _grid_manifest(plan: SessionPlan, grid: GridPlan, manifest: Manifest) -> None:
    key = grid.rel_dir
    atlas = grid.atlas
    manifest.acquisitions.append(
        ManifestAcquisition(
            acquisition_key=key,
            session_id=str(grid.session_id),
            name=grid.session_name,
            start_time=grid.started,
            end_time=grid.ended,
            storage_path=plan.storage_windows,
            atlas_path=grid.atlas_windows_path,
            clustering_mode="NoClustering",
            clustering_radius_m=0.0,
            instrument_model=INSTRUMENT_MODEL,
            instrument_id=INSTRUMENT_ID,
            computer_name=COMPUTER_NAME,
            epu_version=EPU_VERSION,
            session_dir=grid.rel_dir,
        )
    )
    manifest.grids.append(
        ManifestGrid(
            acquisition_key=key,
            name=grid.session_name,
            data_dir=grid.rel_dir,
            atlas_dir=atlas.rel_dir,
            scan_start_time=grid.started,
            scan_end_time=grid.ended,
        )
    )
    manifest.atlases.append(
        ManifestAtlas(
            acquisition_key=key,
            atlas_id=str(atlas.atlas_id),
            name="Atlas",
            description=f"Atlas for autoloader slot {atlas.slot}",
            acquisition_date=atlas.acquired,
            start_time=atlas.started,
            storage_folder=atlas.storage_folder_windows,
            path=atlas.rel_path,
            tile_count=len(atlas.tiles),
        )
    )
    squares = {s.square_id: s for s in grid.squares}
    for tile in atlas.tiles:
        manifest.atlas_tiles.append(
            ManifestAtlasTile(
                acquisition_key=key,
                atlas_id=str(atlas.atlas_id),
                tile_id=str(tile.tile_id),
                tile_index=tile.index,
                position_x=tile.atlas_position[0],
                position_y=tile.atlas_position[1],
                size_x=tile.atlas_position[2],
                size_y=tile.atlas_position[3],
                file_format="Mrc",
                base_filename=tile.image.stem,
                gridsquares=[
                    ManifestTileSquarePosition(
                        gridsquare_id=str(sid),
                        center_x=squares[sid].atlas_center[0],
                        center_y=squares[sid].atlas_center[1],
                        size_width=squares[sid].atlas_size[0],
                        size_height=squares[sid].atlas_size[1],
                    )
                    for sid in tile.square_ids
                ],
            )
        )
    for square in grid.squares:
        image = square.image if square.imaged else None
        folder = f"{grid.rel_dir}/Images-Disc1/GridSquare_{square.square_id}"
        manifest.gridsquares.append(
            ManifestGridSquare(
                acquisition_key=key,
                gridsquare_id=str(square.square_id),
                atlas_node_id=square.square_id,
                state=square.final_state,
                selected=square.selected,
                unusable=False,
                rotation=square.rotation,
                stage_position_x=square.stage.x,
                stage_position_y=square.stage.y,
                stage_position_z=square.stage.z,
                center_x=square.atlas_center[0],
                center_y=square.atlas_center[1],
                size_width=square.atlas_size[0],
                size_height=square.atlas_size[1],
                physical_x=square.physical[0],
                physical_y=square.physical[1],
                tile_id=str(square.tile_id),
                imaged=square.imaged,
                image_path=None if image is None else f"{folder}/{image.stem}.xml",
                acquisition_datetime=None if image is None else image.acquired,
                defocus=None if image is None else image.defocus_m,
                applied_defocus=None if image is None else image.applied_defocus_m,
                magnification=None if image is None else image.magnification,
                pixel_size=None if image is None else image.pixel_size_m,
                detector_name=None if image is None else CAMERA_NAME,
                foilhole_count=len(square.holes),
            )
        )
        for hole in square.holes:
            newest = hole.images[-1] if hole.images else None
            manifest.foilholes.append(
                ManifestFoilHole(
                    acquisition_key=key,
                    foilhole_id=str(hole.hole_id),
                    gridsquare_id=str(square.square_id),
                    center_x=hole.center[0],
                    center_y=hole.center[1],
                    size_width=hole.diameter_px,
                    size_height=hole.diameter_px,
                    x_stage_position=hole.stage.x,
                    y_stage_position=hole.stage.y,
                    quality=hole.quality,
                    rotation=0.0,
                    is_near_grid_bar=hole.near_grid_bar,
                    selected=hole.selected,
                    state=hole.final_state,
                    imaged=hole.imaged,
                    image_paths=[f"{folder}/FoilHoles/{img.stem}.xml" for img in hole.images],
                    found_center_x=None
                    if newest is None or newest.found_center is None
                    else newest.found_center[0],
                    found_center_y=None
                    if newest is None or newest.found_center is None
                    else newest.found_center[1],
                    found_size=None if newest is None else newest.found_size,
                    found_quality=None if newest is None else newest.found_quality,
                )
            )
            for mic in hole.micrographs:
                img = mic.image
                manifest.micrographs.append(
                    ManifestMicrograph(
                        acquisition_key=key,
                        micrograph_id=img.stem,
                        foilhole_id=str(hole.hole_id),
                        gridsquare_id=str(square.square_id),
                        location_id=str(mic.area_id),
                        setting_id=str(mic.setting_id),
                        unique_id=img.unique_id,
                        path=f"{folder}/Data/{img.stem}.xml",
                        acquisition_datetime=img.acquired,
                        defocus=img.defocus_m,
                        applied_defocus=img.applied_defocus_m,
                        detector_name=CAMERA_NAME,
                        detector_commercial_name=DETECTOR_COMMERCIAL_NAME,
                        energy_filter=True,
                        phase_plate=False,
                        image_size_x=READOUT_W,
                        image_size_y=READOUT_H,
                        binning_x=2,
                        binning_y=2,
                        pixel_size=img.pixel_size_m,
                        exposure_time=img.exposure_time_s,
                        dose=img.dose,
                    )
                )


__all__ = ["build_manifest"]
