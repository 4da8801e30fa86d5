"""Response shapes: which stored fields SmartEM's response models return for each entity kind.

Field lists follow SmartEM's ``http_response.py`` (``AcquisitionResponse``, ``GridResponse``, ...). For
instance a foil hole response has ``gridsquare_id`` but not ``gridsquare_uuid``, a grid square response has no
``lowmag``, and a micrograph response has a ``micrograph_id`` that the agent never sends (always null).
"""

from __future__ import annotations

from typing import Any

from converters.requests import (
    AcquisitionCreateRequest,
    GridSquareCreateRequest,
    MicrographCreateRequest,
)
from testbed.backend.options import Compat

RESPONSE_FIELDS: dict[str, tuple[str, ...]] = {
    "acquisition": tuple(AcquisitionCreateRequest.model_fields),
    "grid": (
        "uuid",
        "acquisition_uuid",
        "status",
        "name",
        "data_dir",
        "atlas_dir",
        "scan_start_time",
        "scan_end_time",
    ),
    "atlas": ("uuid", "grid_uuid", "atlas_id", "acquisition_date", "storage_folder", "description", "name"),
    "atlas_tile": (
        "uuid",
        "atlas_uuid",
        "tile_id",
        "position_x",
        "position_y",
        "size_x",
        "size_y",
        "file_format",
        "base_filename",
    ),
    "gridsquare": tuple(f for f in GridSquareCreateRequest.model_fields if f != "lowmag"),
    "foilhole": (
        "uuid",
        "gridsquare_id",
        "foilhole_id",
        "status",
        "center_x",
        "center_y",
        "quality",
        "rotation",
        "size_width",
        "size_height",
        "x_location",
        "y_location",
        "x_stage_position",
        "y_stage_position",
        "diameter",
        "is_near_grid_bar",
    ),
    "micrograph": (
        "uuid",
        "foilhole_uuid",
        "foilhole_id",
        "micrograph_id",
        *(
            f
            for f in MicrographCreateRequest.model_fields
            if f not in ("uuid", "foilhole_uuid", "foilhole_id")
        ),
    ),
}


def project(kind: str, data: dict[str, Any], _compat: Compat) -> dict[str, Any]:
    """The response body for one entity, the same in both modes. Status values come back as sent: they are
    checked against SmartEM's vocabularies on the way in, and SmartEM returns its enums by value."""
    return {name: data.get(name) for name in RESPONSE_FIELDS[kind]}


__all__ = ["RESPONSE_FIELDS", "project"]
