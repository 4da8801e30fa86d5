"""``AsyncSmartEMAPIClient``: the asyncio twin of :class:`~backend_client.client.SmartEMAPIClient`.

Same methods, arguments and return values as the sync client, as coroutines. Requests are built and responses
interpreted by the same :mod:`backend_client.operations` specs; only the transport (``httpx.AsyncClient``)
and the retry driver (tenacity ``AsyncRetrying``) differ.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from backend_client import operations as ops
from backend_client._base import DEFAULT_HEADERS, DEFAULT_TIMEOUT, ClientSettings
from backend_client._conversions import (
    foilhole_requests,
    group_positions_by_tile,
    position_request,
    tile_request,
)
from backend_client.errors import map_transport_errors
from backend_client.models import (
    AcquisitionCreateRequest,
    AcquisitionResponse,
    AgentHeartbeatResponse,
    AgentInstructionAcknowledgement,
    AgentInstructionAcknowledgementResponse,
    AgentLogEntry,
    AtlasCreateRequest,
    AtlasResponse,
    AtlasTileGridSquarePositionResponse,
    AtlasTileResponse,
    FoilHoleCreateRequest,
    FoilHoleResponse,
    GridCreateRequest,
    GridResponse,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    GridSquareResponse,
    InstructionCreateRequest,
    InstructionCreateResponse,
    MicrographCreateRequest,
    MicrographResponse,
    SessionCreateRequest,
    SessionResponse,
    StatusResponse,
)
from backend_client.retry import RetryPolicy
from converters.entity_converter import EntityConverter
from converters.models import (
    AcquisitionData,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    GridData,
    GridSquareData,
    MicrographData,
)

T = TypeVar("T")


class AsyncSmartEMAPIClient:
    """Asynchronous client of a SmartEM-compatible backend (same arguments as ``SmartEMAPIClient``).

    Args:
        base_url: the backend's root URL (``http://host:8000``).
        timeout: read/write timeout in seconds (or an ``httpx.Timeout``); always applied.
        logger: logger for request debug lines (defaults to ``backend_client``); no handler is added.
        auth: an ``httpx.Auth`` (:class:`~backend_client.auth.StaticTokenAuth`,
            :class:`~backend_client.auth.ClientCredentialsAuth`), or ``None`` for an open backend.
        retry: the retry policy (defaults to :class:`~backend_client.retry.RetryPolicy`'s defaults).
        transport: an async ``httpx`` transport (tests inject ``httpx.MockTransport``).
        verify: TLS verification (``True``, ``False`` or a CA bundle path).
        connect_timeout: connect timeout in seconds (default ``min(timeout, 5)``).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        logger: logging.Logger | None = None,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
        connect_timeout: float | None = None,
    ) -> None:
        self._settings = ClientSettings(base_url, timeout, logger, retry, connect_timeout)
        self.base_url = self._settings.base_url
        self.logger = self._settings.logger
        self.retry_policy = self._settings.retry
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self._settings.timeout,
            auth=auth,
            transport=transport,
            verify=verify,
            headers=DEFAULT_HEADERS,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSmartEMAPIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- sending ---------------------------------------------------------------------------------------------

    async def _send_once(self, spec: ops.RequestSpec[T]) -> T:
        with map_transport_errors(
            spec.method, spec.path, entity_kind=spec.entity_kind, entity_uuid=spec.entity_uuid
        ):
            request = spec.build_request(self._http)
            try:
                response = await self._http.send(request)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # SmartEM closes a keep-alive connection right after a 500; a request written to it is never
                # processed. Resend once: the pool has discarded the dead connection, so this uses a fresh
                # one.
                self.logger.debug("stale connection on %s %s, resending once", spec.method, spec.path)
                response = await self._http.send(request)
        try:
            spec.log_outcome(self.logger, response)
            return spec.handle(response)
        finally:
            await response.aclose()

    async def request(self, spec: ops.RequestSpec[T], *, retry: RetryPolicy | None = None) -> T:
        """Send one :class:`~backend_client.operations.RequestSpec` under the retry policy (low-level)."""
        policy = retry or self.retry_policy
        if not spec.retry:
            return await self._send_once(spec)
        result: T = await policy.async_retrying(spec.operation)(self._send_once, spec)
        return result

    # -- request-model level (used by the agent's outbox) ----------------------------------------------------

    async def get_status(self) -> StatusResponse:
        """``GET /status``."""
        return await self.request(ops.get_status())

    async def get_entity(self, kind: str, uuid: str) -> dict[str, Any]:
        """``GET`` one entity (kinds: acquisition, grid, atlas, atlas_tile, gridsquare, foilhole, micrograph).

        Raises :class:`~backend_client.errors.NotFoundError` when it does not exist. Use it after a
        :class:`~backend_client.errors.ServerError` on a create: SmartEM answers a duplicate uuid with 500.
        """
        return await self.request(ops.get_entity(kind, uuid))

    async def create_acquisition_request(self, req: AcquisitionCreateRequest) -> AcquisitionResponse:
        """``POST /acquisitions``."""
        return await self.request(ops.create_acquisition(req))

    async def update_acquisition_request(self, req: AcquisitionCreateRequest) -> AcquisitionResponse:
        """``PUT /acquisitions/{uuid}``."""
        return await self.request(ops.update_acquisition(req))

    async def create_grid_request(self, req: GridCreateRequest) -> GridResponse:
        """``POST /acquisitions/{acquisition_uuid}/grids``."""
        return await self.request(ops.create_grid(req))

    async def update_grid_request(self, req: GridCreateRequest) -> GridResponse:
        """``PUT /grids/{uuid}``."""
        return await self.request(ops.update_grid(req))

    async def create_atlas_request(self, req: AtlasCreateRequest) -> AtlasResponse:
        """``POST /grids/{grid_uuid}/atlas`` (tiles embedded)."""
        return await self.request(ops.create_atlas(req))

    async def link_tile_gridsquares_request(
        self, tile_uuid: str, positions: Sequence[GridSquarePositionRequest]
    ) -> list[AtlasTileGridSquarePositionResponse]:
        """``POST /atlas-tiles/{tile_uuid}/gridsquares``: all square positions of one tile."""
        return await self.request(ops.link_tile_gridsquares(tile_uuid, positions))

    async def create_gridsquare_request(self, req: GridSquareCreateRequest) -> GridSquareResponse:
        """``POST /grids/{grid_uuid}/gridsquares``."""
        return await self.request(ops.create_gridsquare(req))

    async def create_gridsquares_batch_request(
        self, grid_uuid: str, reqs: Sequence[GridSquareCreateRequest]
    ) -> list[GridSquareResponse]:
        """``POST /grids/{grid_uuid}/gridsquares/batch`` (one transaction, 1 to 1000 squares)."""
        return await self.request(ops.create_gridsquares_batch(grid_uuid, reqs))

    async def update_gridsquare_request(self, req: GridSquareCreateRequest) -> GridSquareResponse:
        """``PUT /gridsquares/{uuid}``."""
        return await self.request(ops.update_gridsquare(req))

    async def create_foilholes_request(
        self, gridsquare_uuid: str, reqs: Sequence[FoilHoleCreateRequest]
    ) -> list[FoilHoleResponse]:
        """``POST /gridsquares/{uuid}/foilholes`` (batch)."""
        return await self.request(ops.create_foilholes(gridsquare_uuid, reqs))

    async def update_foilhole_request(self, req: FoilHoleCreateRequest) -> FoilHoleResponse:
        """``PUT /foilholes/{uuid}``."""
        return await self.request(ops.update_foilhole(req))

    async def create_micrograph_request(self, req: MicrographCreateRequest) -> MicrographResponse:
        """``POST /foilholes/{foilhole_uuid}/micrographs``."""
        return await self.request(ops.create_micrograph(req))

    async def create_micrographs_batch_request(
        self, reqs: Sequence[MicrographCreateRequest]
    ) -> list[MicrographResponse]:
        """Testbed batch extension; raises :class:`~backend_client.errors.NotFoundError` on SmartEM."""
        return await self.request(ops.create_micrographs_batch(reqs))

    async def update_micrograph_request(self, req: MicrographCreateRequest) -> MicrographResponse:
        """``PUT /micrographs/{uuid}``."""
        return await self.request(ops.update_micrograph(req))

    async def mark_grid_registered(self, grid_uuid: str) -> bool:
        """``POST /grids/{uuid}/registered``."""
        return await self.request(ops.mark_grid_registered(grid_uuid))

    async def mark_gridsquare_registered(self, gridsquare_uuid: str, count: int | None = None) -> bool:
        """``POST /gridsquares/{uuid}/registered?count=N``."""
        return await self.request(ops.mark_gridsquare_registered(gridsquare_uuid, count))

    async def send_heartbeat(self, agent_id: str, session_id: str) -> AgentHeartbeatResponse:
        """``POST /agent/{agent_id}/session/{session_id}/heartbeat`` (404 without an active connection)."""
        return await self.request(ops.heartbeat(agent_id, session_id))

    async def ship_logs(self, agent_id: str, session_id: str, records: Iterable[AgentLogEntry]) -> int:
        """``POST .../logs`` in chunks of at most 500 records; returns how many the backend stored."""
        stored = 0
        for spec in ops.ship_logs(agent_id, session_id, records):
            stored += (await self.request(spec)).stored
        return stored

    async def create_session(self, req: SessionCreateRequest) -> SessionResponse:
        """SmartEM's ``POST /debug/sessions/create`` (operators and tests; SmartEM has no other way)."""
        return await self.request(ops.create_session(req))

    async def create_instruction(
        self, session_id: str, req: InstructionCreateRequest
    ) -> InstructionCreateResponse:
        """SmartEM's ``POST /debug/session/{id}/create-instruction`` (operators and tests)."""
        return await self.request(ops.create_instruction(session_id, req))

    # -- SmartEM's own methods (domain models, converted with EntityConverter) -------------------------------

    async def create_acquisition(self, acquisition: AcquisitionData) -> AcquisitionResponse:
        """Create a new acquisition."""
        return await self.create_acquisition_request(EntityConverter.acquisition_to_request(acquisition))

    async def update_acquisition(self, acquisition: AcquisitionData) -> AcquisitionResponse:
        """Update an acquisition."""
        return await self.update_acquisition_request(EntityConverter.acquisition_to_request(acquisition))

    async def get_acquisition_grids(self, acquisition_uuid: str) -> list[GridResponse]:
        """Get all grids for a specific acquisition."""
        return await self.request(ops.get_acquisition_grids(acquisition_uuid))

    async def create_acquisition_grid(self, grid: GridData) -> GridResponse:
        """Create a new grid for a specific acquisition."""
        return await self.create_grid_request(EntityConverter.grid_to_request(grid))

    async def update_grid(self, grid: GridData) -> GridResponse:
        """Update a grid."""
        return await self.update_grid_request(EntityConverter.grid_to_request(grid))

    async def create_grid_atlas(self, atlas: AtlasData) -> AtlasResponse:
        """Create the atlas of a grid (tiles embedded)."""
        return await self.create_atlas_request(EntityConverter.atlas_to_request(atlas))

    async def get_atlas_tiles_by_atlas(self, atlas_uuid: str) -> list[AtlasTileResponse]:
        """Get all tiles for a specific atlas."""
        return await self.request(ops.get_atlas_tiles_by_atlas(atlas_uuid))

    async def create_atlas_tile_for_atlas(self, tile: AtlasTileData) -> AtlasTileResponse:
        """Create a new tile for a specific atlas."""
        return await self.request(ops.create_atlas_tile(tile_request(tile)))

    async def link_atlas_tile_and_gridsquare(
        self, gridsquare_position: AtlasTileGridSquarePositionData
    ) -> AtlasTileGridSquarePositionResponse:
        """Link a grid square to a tile."""
        tile_uuid, gridsquare_uuid, position = position_request(gridsquare_position)
        return await self.request(ops.link_tile_gridsquare(tile_uuid, gridsquare_uuid, position))

    async def link_atlas_tile_and_gridsquares(
        self, gridsquare_positions: list[AtlasTileGridSquarePositionData]
    ) -> list[AtlasTileGridSquarePositionResponse]:
        """Link multiple grid squares to their tiles (one batch request per tile)."""
        results: list[AtlasTileGridSquarePositionResponse] = []
        for tile_uuid, positions in group_positions_by_tile(gridsquare_positions).items():
            results.extend(await self.link_tile_gridsquares_request(tile_uuid, positions))
        return results

    async def update_gridsquare(self, gridsquare: GridSquareData, lowmag: bool = False) -> GridSquareResponse:
        """Update a grid square."""
        return await self.update_gridsquare_request(
            EntityConverter.gridsquare_to_request(gridsquare, lowmag=lowmag)
        )

    async def get_grid_gridsquares(self, grid_uuid: str) -> list[GridSquareResponse]:
        """Get all grid squares for a specific grid."""
        return await self.request(ops.get_grid_gridsquares(grid_uuid))

    async def create_grid_gridsquare(
        self, gridsquare: GridSquareData, lowmag: bool = False
    ) -> GridSquareResponse:
        """Create a new grid square for a specific grid."""
        return await self.create_gridsquare_request(
            EntityConverter.gridsquare_to_request(gridsquare, lowmag=lowmag)
        )

    async def get_gridsquare_foilholes(self, gridsquare_uuid: str) -> list[FoilHoleResponse]:
        """Get all foil holes for a specific grid square."""
        return await self.request(ops.get_gridsquare_foilholes(gridsquare_uuid))

    async def create_gridsquare_foilholes(
        self, gridsquare_uuid: str, foilholes: list[FoilHoleData], allow_on_grid_bar: bool = False
    ) -> list[FoilHoleResponse]:
        """Create the foil holes of a grid square in one request (near-grid-bar holes skipped unless
        allowed)."""
        reqs = foilhole_requests(foilholes, allow_on_grid_bar=allow_on_grid_bar)
        if not reqs:
            return []
        return await self.create_foilholes_request(gridsquare_uuid, reqs)

    async def update_foilhole(self, foilhole: FoilHoleData) -> FoilHoleResponse:
        """Update a foil hole."""
        return await self.update_foilhole_request(EntityConverter.foilhole_to_request(foilhole))

    async def get_foilhole_micrographs(self, foilhole_id: str) -> list[MicrographResponse]:
        """Get all micrographs for a specific foil hole (``foilhole_id`` is the foil hole's uuid)."""
        return await self.request(ops.get_foilhole_micrographs(foilhole_id))

    async def create_foilhole_micrograph(self, micrograph: MicrographData) -> MicrographResponse:
        """Create a new micrograph for a specific foil hole."""
        return await self.create_micrograph_request(EntityConverter.micrograph_to_request(micrograph))

    async def update_micrograph(self, micrograph: MicrographData) -> MicrographResponse:
        """Update a micrograph."""
        return await self.update_micrograph_request(EntityConverter.micrograph_to_request(micrograph))

    async def acknowledge_instruction(
        self,
        agent_id: str,
        session_id: str,
        instruction_id: str,
        acknowledgement: AgentInstructionAcknowledgement,
    ) -> AgentInstructionAcknowledgementResponse:
        """Acknowledge an instruction (one POST under the retry policy; see ``SSEAgentClient`` for the
        SmartEM-aware variant that treats a repeated ack as success)."""
        return await self.request(ops.acknowledge(agent_id, session_id, instruction_id, acknowledgement))
