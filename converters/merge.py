"""Merging partial entity models that come from different file kinds.

A grid square is described by its ``Metadata/GridSquare_<id>.dm``, its atlas node and its grid-square image; a
foil hole by the grid-square ``.dm`` and (usually two) foil-hole images; a micrograph by its XML and the
camera's ``_Fractions.xml``; a tile by ``Atlas.dm`` and its ``Tile_*.xml``. Each file kind owns a fixed set of
fields (:data:`PROVIDED_FIELDS`); :func:`merge` copies exactly those from a newer parse onto the current
model, so a foil-hole image never erases the position and diameter that only the ``.dm`` has, and vice versa.
Among foil-hole images the newest (by file-name timestamp, :func:`image_version`) wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel

from converters.models import AtlasTileData, FoilHoleData, GridSquareData, MicrographData
from converters.paths import EpuFileKind

_GS_DM = frozenset(
    {
        "session_root", "atlas_node_id", "state", "selected", "unusable", "order", "rotation_rad",
        "stage_position", "hole_spacing_m", "image_base_filename", "outline_center_x_px",
        "outline_center_y_px",
        "outline_vertices_px", "foilhole_count",
    }
)  # fmt: skip
_GS_ATLAS = frozenset(
    {
        "atlas_id", "tile_id", "center_x_px", "center_y_px", "size_width_px", "size_height_px",
        "physical_x_m",
        "physical_y_m", "physical_width_m", "physical_height_m", "atlas_rotation_rad", "atlas_quality",
        "atlas_category", "atlas_stage_position", "aligned_stage_position",
    }
)  # fmt: skip
_GS_IMAGE = frozenset({"session_root", "image", "image_timestamp", "image_path"})
_FH_DM = frozenset(
    {
        "gridsquare_id", "session_root", "x_location_px", "y_location_px", "width_px", "height_px",
        "stage_position", "is_near_grid_bar", "selected", "state", "quality", "rotation_rad",
        "image_base_filename", "micrograph_ids",
    }
)  # fmt: skip
_FH_IMAGE = frozenset({"found_hole", "image_stage_position", "image", "image_timestamp", "image_path"})
_MG_XML = frozenset(
    {
        "foilhole_id", "gridsquare_id", "session_root", "location_id", "setting_id", "name_timestamp",
        "manifest_file", "image",
    }
)  # fmt: skip
_TILE_ATLAS = frozenset(
    {
        "atlas_id", "atlas_path", "position_x_px", "position_y_px", "width_px", "height_px", "stage_position",
        "base_filename", "file_format", "tile_index", "gridsquare_positions",
    }
)  # fmt: skip
_TILE_IMAGE = frozenset({"image"})

PROVIDED_FIELDS: dict[type[BaseModel], dict[EpuFileKind, frozenset[str]]] = {
    GridSquareData: {
        EpuFileKind.GRIDSQUARE_METADATA: _GS_DM,
        EpuFileKind.ATLAS: _GS_ATLAS,
        EpuFileKind.GRIDSQUARE_IMAGE: _GS_IMAGE,
    },
    FoilHoleData: {EpuFileKind.GRIDSQUARE_METADATA: _FH_DM, EpuFileKind.FOILHOLE_IMAGE: _FH_IMAGE},
    MicrographData: {EpuFileKind.MICROGRAPH: _MG_XML, EpuFileKind.FRACTIONS: frozenset({"fractions"})},
    AtlasTileData: {EpuFileKind.ATLAS: _TILE_ATLAS, EpuFileKind.ATLAS_TILE: _TILE_IMAGE},
}
"""Model type -> file kind -> the fields that kind provides (and owns) for that model."""

_ID_FIELDS: dict[type[BaseModel], str] = {
    GridSquareData: "gridsquare_id",
    FoilHoleData: "foilhole_id",
    MicrographData: "micrograph_id",
    AtlasTileData: "tile_id",
}

M = TypeVar("M", GridSquareData, FoilHoleData, MicrographData, AtlasTileData)


def provided_fields(model_type: type[BaseModel], kind: EpuFileKind) -> frozenset[str]:
    """Fields of ``model_type`` that file ``kind`` provides (empty when the kind says nothing about it)."""
    return PROVIDED_FIELDS.get(model_type, {}).get(kind, frozenset())


def image_version(timestamp: datetime | None) -> str:
    """The version of an image for "the newest image wins": its file-name timestamp as ISO 8601 text.

    The one rule for images that replace each other (foil-hole images before and after re-centring, several
    images of a grid square): the higher version wins, an equal one (the same file rewritten) counts as newer so
    that re-reading a file always applies it, and an image whose name has no timestamp (``""``) is older than
    any that has one. :func:`merge` compares these, and the agent stores them as the version of each image's
    contribution. File-name timestamps are naive local times in one format, so text order is time order.
    """
    return "" if timestamp is None else timestamp.isoformat()


def is_newer_foilhole_image(current: FoilHoleData, candidate: FoilHoleData) -> bool:
    """Whether ``candidate``'s image should replace ``current``'s (:func:`image_version`: newest name wins)."""
    return image_version(candidate.image_timestamp) >= image_version(current.image_timestamp)


def merge(current: M, update: M, kind: EpuFileKind) -> M:
    """``current`` with the fields that ``kind`` provides taken from ``update`` (a parse of a ``kind`` file).

    ``None`` values in ``update`` do not erase known values (an older EPU version may lack a field). uuids and
    every field owned by other kinds stay as they are. For foil-hole images an older image than the one
    already merged is ignored (newest wins). Raises ``ValueError`` if the two models describe different
    entities.
    """
    model_type = type(current)
    if type(update) is not model_type:
        raise ValueError(f"cannot merge {type(update).__name__} into {model_type.__name__}")
    id_field = _ID_FIELDS[model_type]
    if getattr(current, id_field) != getattr(update, id_field):
        raise ValueError(
            f"cannot merge {model_type.__name__} {getattr(update, id_field)} "
            f"into {getattr(current, id_field)}"
        )
    if (
        kind is EpuFileKind.FOILHOLE_IMAGE
        and isinstance(current, FoilHoleData)
        and isinstance(update, FoilHoleData)
        and current.image is not None
        and not is_newer_foilhole_image(current, update)
    ):
        return current
    changes = {
        name: getattr(update, name)
        for name in provided_fields(model_type, kind)
        if getattr(update, name) is not None
    }
    return current.model_copy(update=changes)


__all__ = ["PROVIDED_FIELDS", "image_version", "is_newer_foilhole_image", "merge", "provided_fields"]
