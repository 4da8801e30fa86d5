"""Domain model -> request model steps of SmartEM's seed methods that need more than one ``EntityConverter``
call (shared by the sync and async clients)."""

from __future__ import annotations

from collections.abc import Iterable

from backend_client.models import AtlasTileCreateRequest, FoilHoleCreateRequest, GridSquarePositionRequest
from converters.entity_converter import EntityConverter
from converters.models import AtlasTileData, AtlasTileGridSquarePositionData, FoilHoleData


def tile_request(tile: AtlasTileData) -> AtlasTileCreateRequest:
    """Request model of one atlas tile."""
    return EntityConverter.atlas_tile_to_request(tile)


def _need(value: str | None, what: str) -> str:
    if not value:
        raise ValueError(f"{what} is not set; assign uuids before linking tiles and grid squares")
    return value


def position_request(position: AtlasTileGridSquarePositionData) -> tuple[str, str, GridSquarePositionRequest]:
    """``(tile_uuid, gridsquare_uuid, request)`` for one tile-to-square link; both uuids must be set."""
    tile_uuid = _need(position.tile_uuid, f"tile {position.tile_id} uuid")
    gridsquare_uuid = _need(position.gridsquare_uuid, f"grid square {position.gridsquare_id} uuid")
    return tile_uuid, gridsquare_uuid, EntityConverter.tile_position_to_request(position)


def group_positions_by_tile(
    positions: Iterable[AtlasTileGridSquarePositionData],
) -> dict[str, list[GridSquarePositionRequest]]:
    """Positions grouped per tile uuid (SmartEM's batch link endpoint takes the squares of one tile)."""
    grouped: dict[str, list[GridSquarePositionRequest]] = {}
    for position in positions:
        tile_uuid, _gridsquare_uuid, request = position_request(position)
        grouped.setdefault(tile_uuid, []).append(request)
    return grouped


def foilhole_requests(
    foilholes: Iterable[FoilHoleData], *, allow_on_grid_bar: bool
) -> list[FoilHoleCreateRequest]:
    """Request models of foil holes; near-grid-bar holes are left out unless allowed (SmartEM's behaviour)."""
    reqs = [EntityConverter.foilhole_to_request(hole) for hole in foilholes]
    return [req for req in reqs if allow_on_grid_bar or not req.is_near_grid_bar]
