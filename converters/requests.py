"""SmartEM entity request models: the wire contract for creating and updating entities.

Field names and types follow SmartEM's ``smartem_backend/model/http_request.py`` (see
``smartem-reference.md`` section 3). They live in ``converters`` because ``EntityConverter`` produces them and
``converters`` may not import ``backend_client``; ``backend_client.models`` re-exports them.

Units on the wire are SmartEM's: stage positions, pixel sizes and defocus in metres, pixel coordinates in
pixels, datetimes as ISO-8601 *naive UTC* (:data:`WireDatetime`: SmartEM stores every datetime in PostgreSQL
``timestamp without time zone`` columns and answers 500 to a value with an offset). Models forbid unknown fields so drift shows up in tests; when dumping for the
wire use :func:`to_wire`, which drops ``None`` values as SmartEM's client does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def naive_utc(value: datetime) -> datetime:
    """``value`` in UTC without its offset; a naive value is taken as UTC already and returned unchanged."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _wire_datetime(value: datetime) -> str:
    return naive_utc(value).isoformat()


#: A datetime as it goes on the wire to a SmartEM backend: ISO-8601 in UTC with no offset
#: (``2023-09-19T12:01:41.5``). SmartEM's columns are ``timestamp without time zone`` and asyncpg refuses to
#: store an aware value there (the request fails with 500, nothing stored), so the offset EPU writes is applied
#: here and dropped. The Python value keeps its offset; only the JSON form is naive.
WireDatetime = Annotated[datetime, PlainSerializer(_wire_datetime, return_type=str, when_used="json")]


class _Request(BaseModel):
    """Base for request bodies: unknown fields are a bug on our side, so they are rejected."""

    model_config = ConfigDict(extra="forbid")


def to_wire(model: BaseModel) -> dict[str, Any]:
    """Dump a request model as SmartEM's client does: JSON mode, ``None`` values omitted."""
    return model.model_dump(mode="json", exclude_none=True)


class AcquisitionCreateRequest(_Request):
    """``POST /acquisitions`` and ``PUT /acquisitions/{uuid}``. Always send ``name`` (SmartEM 500s without it)."""

    uuid: str
    name: str | None = None
    status: str | None = None
    start_time: WireDatetime | None = None
    end_time: WireDatetime | None = None
    paused_time: WireDatetime | None = None
    storage_path: str | None = None
    atlas_path: str | None = None
    clustering_mode: str | None = None
    clustering_radius: str | None = None
    instrument_model: str | None = None
    instrument_id: str | None = None
    computer_name: str | None = None


class GridCreateRequest(_Request):
    """``POST /acquisitions/{uuid}/grids`` and ``PUT /grids/{uuid}``."""

    uuid: str
    name: str
    acquisition_uuid: str
    status: str | None = None
    data_dir: str | None = None
    atlas_dir: str | None = None
    scan_start_time: WireDatetime | None = None
    scan_end_time: WireDatetime | None = None


class AtlasTileCreateRequest(_Request):
    """One tile embedded in :class:`AtlasCreateRequest`."""

    uuid: str
    atlas_uuid: str
    tile_id: str | None = None
    position_x: int | None = None
    position_y: int | None = None
    size_x: int | None = None
    size_y: int | None = None
    file_format: str | None = None
    base_filename: str | None = None


class AtlasCreateRequest(_Request):
    """``POST /grids/{grid_uuid}/atlas`` (tiles embedded)."""

    uuid: str
    grid_uuid: str
    name: str
    atlas_id: str | None = None
    acquisition_date: WireDatetime | None = None
    storage_folder: str | None = None
    description: str | None = None
    tiles: list[AtlasTileCreateRequest] | None = None


class GridSquarePositionRequest(_Request):
    """One grid square's placement on an atlas tile (``POST /atlas-tiles/{tile_uuid}/gridsquares``, batch)."""

    center_x: int
    center_y: int
    size_width: int
    size_height: int
    gridsquare_uuid: str | None = None


class GridSquareCreateRequest(_Request):
    """``POST /grids/{grid_uuid}/gridsquares`` and ``PUT /gridsquares/{uuid}``."""

    uuid: str
    gridsquare_id: str
    grid_uuid: str
    data_dir: str | None = None
    atlas_node_id: int | None = None
    state: str | None = None
    rotation: float | None = None
    image_path: str | None = None
    selected: bool | None = None
    unusable: bool | None = None
    stage_position_x: float | None = None
    stage_position_y: float | None = None
    stage_position_z: float | None = None
    center_x: int | None = None
    center_y: int | None = None
    physical_x: float | None = None
    physical_y: float | None = None
    size_width: int | None = None
    size_height: int | None = None
    acquisition_datetime: WireDatetime | None = None
    defocus: float | None = None
    magnification: float | None = None
    pixel_size: float | None = None
    detector_name: str | None = None
    applied_defocus: float | None = None
    status: str | None = None
    lowmag: bool = False


class GridSquareBatchCreateRequest(_Request):
    """``POST /grids/{grid_uuid}/gridsquares/batch``: at most 1000 squares, unique uuids."""

    gridsquares: list[GridSquareCreateRequest] = Field(min_length=1, max_length=1000)


class FoilHoleCreateRequest(_Request):
    """One element of ``POST /gridsquares/{uuid}/foilholes`` (a list) and ``PUT /foilholes/{uuid}``."""

    uuid: str
    foilhole_id: str
    gridsquare_id: str
    gridsquare_uuid: str
    center_x: float | None = None
    center_y: float | None = None
    quality: float | None = None
    rotation: float | None = None
    size_width: float | None = None
    size_height: float | None = None
    x_location: int | None = None
    y_location: int | None = None
    diameter: int | None = None
    x_stage_position: float | None = None
    y_stage_position: float | None = None
    is_near_grid_bar: bool = False
    status: str | None = None


class MicrographCreateRequest(_Request):
    """``POST /foilholes/{uuid}/micrographs`` and ``PUT /micrographs/{uuid}``."""

    uuid: str
    foilhole_id: str
    foilhole_uuid: str | None = None
    location_id: str | None = None
    high_res_path: str | None = None
    manifest_file: str | None = None
    acquisition_datetime: WireDatetime | None = None
    defocus: float | None = None
    detector_name: str | None = None
    energy_filter: bool | None = None
    phase_plate: bool | None = None
    image_size_x: int | None = None
    image_size_y: int | None = None
    binning_x: int | None = None
    binning_y: int | None = None
    total_motion: float | None = None
    average_motion: float | None = None
    ctf_max_resolution_estimate: float | None = None
    number_of_particles_selected: int | None = None
    number_of_particles_rejected: int | None = None
    selection_distribution: str | None = None
    number_of_particles_picked: int | None = None
    pick_distribution: str | None = None
    status: str = "none"


class MicrographBatchCreateRequest(_Request):
    """Compatible extension (testbed only): ``POST /foilholes/micrographs/batch`` with up to 1000 micrographs,
    each carrying its ``foilhole_uuid``. SmartEM has no such endpoint; clients fall back to single posts on 404/405.
    """

    micrographs: list[MicrographCreateRequest] = Field(min_length=1, max_length=1000)


__all__ = [
    "AcquisitionCreateRequest",
    "AtlasCreateRequest",
    "AtlasTileCreateRequest",
    "FoilHoleCreateRequest",
    "GridCreateRequest",
    "GridSquareBatchCreateRequest",
    "GridSquareCreateRequest",
    "GridSquarePositionRequest",
    "MicrographBatchCreateRequest",
    "MicrographCreateRequest",
    "WireDatetime",
    "naive_utc",
    "to_wire",
]
