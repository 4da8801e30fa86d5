"""``EntityConverter``: domain models -> SmartEM request models (``converters.requests``).

The six static methods of SmartEM's reference client keep their names and arguments; ``atlas_tile_to_request``
and ``tile_position_to_request`` are additions. Units: the domain models and the wire both use metres for
stage positions, pixel sizes, defocus and physical extents, so lengths pass through unchanged; pixel
coordinates become the ints the request models expect (rounded); datetimes pass through timezone-aware. The
agent must set the ``uuid`` (and parent uuid) fields first: a missing one raises ``ValueError`` naming the
entity.
"""

from __future__ import annotations

from pathlib import PurePath

from converters.models import (
    AcquisitionData,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    GridData,
    GridSquareData,
    MicrographData,
    StagePosition,
)
from converters.requests import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    AtlasTileCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographCreateRequest,
)


def _need(value: str | None, what: str) -> str:
    if not value:
        raise ValueError(f"{what} is not set; the agent assigns uuids and parent ids before conversion")
    return value


def _px(value: float | None) -> int | None:
    return None if value is None else round(value)


def _stage_or(primary: StagePosition | None, fallback: StagePosition | None) -> StagePosition | None:
    return primary if primary is not None and primary.x_m is not None else fallback


class EntityConverter:
    """Converts EPU domain models to SmartEM request models (static methods, no state)."""

    @staticmethod
    def acquisition_to_request(entity: AcquisitionData) -> AcquisitionCreateRequest:
        """Acquisition (EPU session); ``name`` always sent (SmartEM 500s without it), status ``started``."""
        return AcquisitionCreateRequest(
            uuid=_need(entity.uuid, f"acquisition {entity.session_id} uuid"),
            name=entity.name,
            status="started",
            start_time=entity.start_time,
            end_time=entity.end_time,
            storage_path=entity.storage_path,
            atlas_path=entity.atlas_path,
            clustering_mode=entity.clustering_mode,
            # SmartEM stores the radius as a string; metres, as EPU writes it.
            clustering_radius=None
            if entity.clustering_radius_m is None
            else repr(entity.clustering_radius_m),
            instrument_model=entity.instrument_model,
            instrument_id=entity.instrument_id,
            computer_name=entity.computer_name,
        )

    @staticmethod
    def grid_to_request(entity: GridData, lowmag: bool = False) -> GridCreateRequest:
        """Grid of a session. ``lowmag`` is accepted for signature compatibility; grids have no such field."""
        return GridCreateRequest(
            uuid=_need(entity.uuid, f"grid {entity.session_id} uuid"),
            name=entity.name,
            acquisition_uuid=_need(entity.acquisition_uuid, f"grid {entity.session_id} acquisition_uuid"),
            status="none",
            data_dir=entity.data_dir,
            atlas_dir=entity.atlas_dir,
            scan_start_time=entity.scan_start_time,
            scan_end_time=entity.scan_end_time,
        )

    @staticmethod
    def gridsquare_to_request(entity: GridSquareData, lowmag: bool = False) -> GridSquareCreateRequest:
        """Grid square, merged from ``.dm``, atlas node and image (whatever is known so far)."""
        image = entity.image
        stage = _stage_or(entity.stage_position, entity.atlas_stage_position)
        data_dir = (
            str(PurePath(entity.image_path).parent) if entity.image_path and image is not None else None
        )
        return GridSquareCreateRequest(
            uuid=_need(entity.uuid, f"grid square {entity.gridsquare_id} uuid"),
            gridsquare_id=entity.gridsquare_id,
            grid_uuid=_need(entity.grid_uuid, f"grid square {entity.gridsquare_id} grid_uuid"),
            data_dir=data_dir,
            atlas_node_id=entity.atlas_node_id,
            state=entity.state,
            rotation=entity.rotation_rad if entity.rotation_rad is not None else entity.atlas_rotation_rad,
            image_path=entity.image_path,
            selected=entity.selected,
            unusable=entity.unusable,
            stage_position_x=stage.x_m if stage else None,
            stage_position_y=stage.y_m if stage else None,
            stage_position_z=stage.z_m if stage else None,
            center_x=_px(entity.center_x_px),
            center_y=_px(entity.center_y_px),
            physical_x=entity.physical_x_m,
            physical_y=entity.physical_y_m,
            size_width=_px(entity.size_width_px),
            size_height=_px(entity.size_height_px),
            acquisition_datetime=image.acquisition_datetime if image else None,
            defocus=image.defocus_m if image else None,
            magnification=image.nominal_magnification if image else None,
            pixel_size=image.pixel_size_x_m if image else None,
            detector_name=(image.detector_commercial_name or image.detector_name) if image else None,
            applied_defocus=image.applied_defocus_m if image else None,
            lowmag=lowmag,
        )

    @staticmethod
    def foilhole_to_request(entity: FoilHoleData) -> FoilHoleCreateRequest:
        """Foil hole: ``.dm`` position/diameter/flags plus the newest image's found centre and size."""
        found = entity.found_hole
        stage = _stage_or(entity.image_stage_position, entity.stage_position)
        return FoilHoleCreateRequest(
            uuid=_need(entity.uuid, f"foil hole {entity.foilhole_id} uuid"),
            foilhole_id=entity.foilhole_id,
            gridsquare_id=_need(entity.gridsquare_id, f"foil hole {entity.foilhole_id} gridsquare_id"),
            gridsquare_uuid=_need(entity.gridsquare_uuid, f"foil hole {entity.foilhole_id} gridsquare_uuid"),
            center_x=found.center_x_px if found else None,
            center_y=found.center_y_px if found else None,
            quality=found.quality if found and found.quality is not None else entity.quality,
            rotation=found.rotation_rad if found and found.rotation_rad is not None else entity.rotation_rad,
            size_width=found.width_px if found else None,
            size_height=found.height_px if found else None,
            x_location=_px(entity.x_location_px),
            y_location=_px(entity.y_location_px),
            diameter=_px(entity.width_px),
            x_stage_position=stage.x_m if stage else None,
            y_stage_position=stage.y_m if stage else None,
            is_near_grid_bar=bool(entity.is_near_grid_bar),
        )

    @staticmethod
    def micrograph_to_request(entity: MicrographData) -> MicrographCreateRequest:
        """Micrograph (one exposure); the detector is sent by commercial name when EPU wrote one."""
        image = entity.image
        return MicrographCreateRequest(
            uuid=_need(entity.uuid, f"micrograph {entity.micrograph_id} uuid"),
            foilhole_id=entity.foilhole_id,
            foilhole_uuid=entity.foilhole_uuid,
            location_id=entity.location_id,
            high_res_path=entity.high_res_path,
            manifest_file=entity.manifest_file,
            acquisition_datetime=image.acquisition_datetime if image else None,
            defocus=image.defocus_m if image else None,
            detector_name=(image.detector_commercial_name or image.detector_name) if image else None,
            energy_filter=image.energy_filter_on if image else None,
            phase_plate=image.phase_plate_used if image else None,
            image_size_x=image.image_width_px if image else None,
            image_size_y=image.image_height_px if image else None,
            binning_x=image.binning_x if image else None,
            binning_y=image.binning_y if image else None,
        )

    @staticmethod
    def atlas_to_request(entity: AtlasData) -> AtlasCreateRequest:
        """Atlas with its tiles embedded (tiles need their uuids set too)."""
        atlas_uuid = _need(entity.uuid, f"atlas {entity.atlas_id} uuid")
        tiles = [
            EntityConverter.atlas_tile_to_request(tile.model_copy(update={"atlas_uuid": atlas_uuid}))
            for tile in entity.tiles
        ]
        return AtlasCreateRequest(
            uuid=atlas_uuid,
            grid_uuid=_need(entity.grid_uuid, f"atlas {entity.atlas_id} grid_uuid"),
            name=entity.name,
            atlas_id=entity.atlas_id,
            acquisition_date=entity.acquisition_datetime or entity.start_time,
            storage_folder=entity.storage_folder,
            description=entity.description,
            tiles=tiles or None,
        )

    @staticmethod
    def atlas_tile_to_request(entity: AtlasTileData) -> AtlasTileCreateRequest:
        """One atlas tile (placement in atlas pixels)."""
        return AtlasTileCreateRequest(
            uuid=_need(entity.uuid, f"atlas tile {entity.tile_id} uuid"),
            atlas_uuid=_need(entity.atlas_uuid, f"atlas tile {entity.tile_id} atlas_uuid"),
            tile_id=entity.tile_id,
            position_x=entity.position_x_px,
            position_y=entity.position_y_px,
            size_x=entity.width_px,
            size_y=entity.height_px,
            file_format=entity.file_format,
            base_filename=entity.base_filename,
        )

    @staticmethod
    def tile_position_to_request(entity: AtlasTileGridSquarePositionData) -> GridSquarePositionRequest:
        """A grid square's placement on a tile: centre and size on the stitched atlas, rounded to pixels."""
        return GridSquarePositionRequest(
            center_x=round(entity.center_x_px),
            center_y=round(entity.center_y_px),
            size_width=round(entity.size_width_px),
            size_height=round(entity.size_height_px),
            gridsquare_uuid=entity.gridsquare_uuid,
        )


__all__ = ["EntityConverter"]
