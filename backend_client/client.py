"""``SmartEMAPIClient``: the synchronous SmartEM API client.

Every method of SmartEM's own client that the agent may use, with the same names and arguments, plus
request-model level methods (the agent's outbox stores request models, not domain models). All calls share one
``httpx.Client`` with connect and read timeouts, one retry policy (:mod:`backend_client.retry`) and one error
mapping (:mod:`backend_client.errors`); the requests themselves are built by
:mod:`backend_client.operations`, shared with :class:`~backend_client.async_client.AsyncSmartEMAPIClient`.
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


class SmartEMAPIClient:
    """Synchronous client of a SmartEM-compatible backend.

    Args:
        base_url: the backend's root URL (``http://host:8000``).
        timeout: read/write timeout in seconds (or an ``httpx.Timeout``); always applied.
        logger: logger for request debug lines (defaults to ``backend_client``); no handler is added.
        auth: an ``httpx.Auth`` (:class:`~backend_client.auth.StaticTokenAuth`,
            :class:`~backend_client.auth.ClientCredentialsAuth`), or ``None`` for an open backend.
        retry: the retry policy (defaults to :class:`~backend_client.retry.RetryPolicy`'s defaults).
        transport: an ``httpx`` transport (tests inject ``httpx.MockTransport``).
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
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
        connect_timeout: float | None = None,
    ) -> None:
        self._settings = ClientSettings(base_url, timeout, logger, retry, connect_timeout)
        self.base_url = self._settings.base_url
        self.logger = self._settings.logger
        self.retry_policy = self._settings.retry
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self._settings.timeout,
            auth=auth,
            transport=transport,
            verify=verify,
            headers=DEFAULT_HEADERS,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> SmartEMAPIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------------------

    def _send_once(self, spec: ops.RequestSpec[T]) -> T:
        with map_transport_errors(
            spec.method, spec.path, entity_kind=spec.entity_kind, entity_uuid=spec.entity_uuid
        ):
            request = spec.build_request(self._http)
            try:
                response = self._http.send(request)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # SmartEM closes a keep-alive connection right after a 500; a request written to it is never
                # processed. Resend once: the pool has discarded the dead connection, so this uses a fresh
                # one.
                self.logger.debug("stale connection on %s %s, resending once", spec.method, spec.path)
                response = self._http.send(request)
        try:
            spec.log_outcome(self.logger, response)
            return spec.handle(response)
        finally:
            response.close()

    def request(self, spec: ops.RequestSpec[T], *, retry: RetryPolicy | None = None) -> T:
        """Send one :class:`~backend_client.operations.RequestSpec` under the retry policy (low-level)."""
        policy = retry or self.retry_policy
        if not spec.retry:
            return self._send_once(spec)
        result: T = policy.retrying(spec.operation)(self._send_once, spec)
        return result

    # -- request-model level (used by the agent's outbox) ----------------------------------------------------

    def get_status(self) -> StatusResponse:
        """``GET /status``."""
        return self.request(ops.get_status())

    def get_entity(self, kind: str, uuid: str) -> dict[str, Any]:
        """``GET`` one entity (kinds: acquisition, grid, atlas, atlas_tile, gridsquare, foilhole, micrograph).

        Raises :class:`~backend_client.errors.NotFoundError` when it does not exist. Use it after a
        :class:`~backend_client.errors.ServerError` on a create: SmartEM answers a duplicate uuid with 500.
        """
        return self.request(ops.get_entity(kind, uuid))

    def create_acquisition_request(self, req: AcquisitionCreateRequest) -> AcquisitionResponse:
        """``POST /acquisitions``."""
        return self.request(ops.create_acquisition(req))

    def update_acquisition_request(self, req: AcquisitionCreateRequest) -> AcquisitionResponse:
        """``PUT /acquisitions/{uuid}``."""
        return self.request(ops.update_acquisition(req))

    def create_grid_request(self, req: GridCreateRequest) -> GridResponse:
        """``POST /acquisitions/{acquisition_uuid}/grids``."""
        return self.request(ops.create_grid(req))

    def update_grid_request(self, req: GridCreateRequest) -> GridResponse:
        """``PUT /grids/{uuid}``."""
        return self.request(ops.update_grid(req))

    def create_atlas_request(self, req: AtlasCreateRequest) -> AtlasResponse:
        """``POST /grids/{grid_uuid}/atlas`` (tiles embedded)."""
        return self.request(ops.create_atlas(req))

    def link_tile_gridsquares_request(
        self, tile_uuid: str, positions: Sequence[GridSquarePositionRequest]
    ) -> list[AtlasTileGridSquarePositionResponse]:
        """``POST /atlas-tiles/{tile_uuid}/gridsquares``: all square positions of one tile."""
        return self.request(ops.link_tile_gridsquares(tile_uuid, positions))

    def create_gridsquare_request(self, req: GridSquareCreateRequest) -> GridSquareResponse:
        """``POST /grids/{grid_uuid}/gridsquares``."""
        return self.request(ops.create_gridsquare(req))

    def create_gridsquares_batch_request(
        self, grid_uuid: str, reqs: Sequence[GridSquareCreateRequest]
    ) -> list[GridSquareResponse]:
        """``POST /grids/{grid_uuid}/gridsquares/batch`` (one transaction, 1 to 1000 squares)."""
        return self.request(ops.create_gridsquares_batch(grid_uuid, reqs))

    def update_gridsquare_request(self, req: GridSquareCreateRequest) -> GridSquareResponse:
        """``PUT /gridsquares/{uuid}``."""
        return self.request(ops.update_gridsquare(req))

    def create_foilholes_request(
        self, gridsquare_uuid: str, reqs: Sequence[FoilHoleCreateRequest]
    ) -> list[FoilHoleResponse]:
        """``POST /gridsquares/{uuid}/foilholes`` (batch)."""
        return self.request(ops.create_foilholes(gridsquare_uuid, reqs))

    def update_foilhole_request(self, req: FoilHoleCreateRequest) -> FoilHoleResponse:
        """``PUT /foilholes/{uuid}``."""
        return self.request(ops.update_foilhole(req))

    def create_micrograph_request(self, req: MicrographCreateRequest) -> MicrographResponse:
        """``POST /foilholes/{foilhole_uuid}/micrographs``."""
        return self.request(ops.create_micrograph(req))

    def create_micrographs_batch_request(
        self, reqs: Sequence[MicrographCreateRequest]
    ) -> list[MicrographResponse]:
        """Testbed batch extension; raises :class:`~backend_client.errors.NotFoundError` on SmartEM."""
        return self.request(ops.create_micrographs_batch(reqs))

    def update_micrograph_request(self, req: MicrographCreateRequest) -> MicrographResponse:
        """``PUT /micrographs/{uuid}``."""
        return self.request(ops.update_micrograph(req))

    def mark_grid_registered(self, grid_uuid: str) -> bool:
        """``POST /grids/{uuid}/registered``."""
        return self.request(ops.mark_grid_registered(grid_uuid))

    def mark_gridsquare_registered(self, gridsquare_uuid: str, count: int | None = None) -> bool:
        """``POST /gridsquares/{uuid}/registered?count=N``."""
        return self.request(ops.mark_gridsquare_registered(gridsquare_uuid, count))

    def send_heartbeat(self, agent_id: str, session_id: str) -> AgentHeartbeatResponse:
        """``POST /agent/{agent_id}/session/{session_id}/heartbeat`` (404 without an active connection)."""
        return self.request(ops.heartbeat(agent_id, session_id))

    def ship_logs(self, agent_id: str, session_id: str, records: Iterable[AgentLogEntry]) -> int:
        """``POST .../logs`` in chunks of at most 500 records; returns how many the backend stored."""
        return sum(self.request(spec).stored for spec in ops.ship_logs(agent_id, session_id, records))

    def create_session(self, req: SessionCreateRequest) -> SessionResponse:
        """SmartEM's ``POST /debug/sessions/create`` (operators and tests; SmartEM has no other way)."""
        return self.request(ops.create_session(req))

    def create_instruction(self, session_id: str, req: InstructionCreateRequest) -> InstructionCreateResponse:
        """SmartEM's ``POST /debug/session/{id}/create-instruction`` (operators and tests)."""
        return self.request(ops.create_instruction(session_id, req))

    # -- SmartEM's own methods (domain models, converted with EntityConverter) -------------------------------

    def create_acquisition(self, acquisition: AcquisitionData) -> AcquisitionResponse:
        """Create a new acquisition."""
        return self.create_acquisition_request(EntityConverter.acquisition_to_request(acquisition))

    def update_acquisition(self, acquisition: AcquisitionData) -> AcquisitionResponse:
        """Update an acquisition."""
        return self.update_acquisition_request(EntityConverter.acquisition_to_request(acquisition))

    def get_acquisition_grids(self, acquisition_uuid: str) -> list[GridResponse]:
        """Get all grids for a specific acquisition."""
        return self.request(ops.get_acquisition_grids(acquisition_uuid))

    def create_acquisition_grid(self, grid: GridData) -> GridResponse:
        """Create a new grid for a specific acquisition."""
        return self.create_grid_request(EntityConverter.grid_to_request(grid))

    def update_grid(self, grid: GridData) -> GridResponse:
        """Update a grid."""
        return self.update_grid_request(EntityConverter.grid_to_request(grid))

    def create_grid_atlas(self, atlas: AtlasData) -> AtlasResponse:
        """Create the atlas of a grid (tiles embedded)."""
        return self.create_atlas_request(EntityConverter.atlas_to_request(atlas))

    def get_atlas_tiles_by_atlas(self, atlas_uuid: str) -> list[AtlasTileResponse]:
        """Get all tiles for a specific atlas."""
        return self.request(ops.get_atlas_tiles_by_atlas(atlas_uuid))

    def create_atlas_tile_for_atlas(self, tile: AtlasTileData) -> AtlasTileResponse:
        """Create a new tile for a specific atlas."""
        return self.request(ops.create_atlas_tile(tile_request(tile)))

    def link_atlas_tile_and_gridsquare(
        self, gridsquare_position: AtlasTileGridSquarePositionData
    ) -> AtlasTileGridSquarePositionResponse:
        """Link a grid square to a tile."""
        tile_uuid, gridsquare_uuid, position = position_request(gridsquare_position)
        return self.request(ops.link_tile_gridsquare(tile_uuid, gridsquare_uuid, position))

    def link_atlas_tile_and_gridsquares(
        self, gridsquare_positions: list[AtlasTileGridSquarePositionData]
    ) -> list[AtlasTileGridSquarePositionResponse]:
        """Link multiple grid squares to their tiles (one batch request per tile)."""
        results: list[AtlasTileGridSquarePositionResponse] = []
        for tile_uuid, positions in group_positions_by_tile(gridsquare_positions).items():
            results.extend(self.link_tile_gridsquares_request(tile_uuid, positions))
        return results

    def update_gridsquare(self, gridsquare: GridSquareData, lowmag: bool = False) -> GridSquareResponse:
        """Update a grid square."""
        return self.update_gridsquare_request(
            EntityConverter.gridsquare_to_request(gridsquare, lowmag=lowmag)
        )

    def get_grid_gridsquares(self, grid_uuid: str) -> list[GridSquareResponse]:
        """Get all grid squares for a specific grid."""
        return self.request(ops.get_grid_gridsquares(grid_uuid))

    def create_grid_gridsquare(self, gridsquare: GridSquareData, lowmag: bool = False) -> GridSquareResponse:
        """Create a new grid square for a specific grid."""
        return self.create_gridsquare_request(
            EntityConverter.gridsquare_to_request(gridsquare, lowmag=lowmag)
        )

    def get_gridsquare_foilholes(self, gridsquare_uuid: str) -> list[FoilHoleResponse]:
        """Get all foil holes for a specific grid square."""
        return self.request(ops.get_gridsquare_foilholes(gridsquare_uuid))

    def create_gridsquare_foilholes(
        self, gridsquare_uuid: str, foilholes: list[FoilHoleData], allow_on_grid_bar: bool = False
    ) -> list[FoilHoleResponse]:
        """Create the foil holes of a grid square in one request (near-grid-bar holes skipped unless
        allowed)."""
        reqs = foilhole_requests(foilholes, allow_on_grid_bar=allow_on_grid_bar)
        if not reqs:
            return []
        return self.create_foilholes_request(gridsquare_uuid, reqs)

    def update_foilhole(self, foilhole: FoilHoleData) -> FoilHoleResponse:
        """Update a foil hole."""
        return self.update_foilhole_request(EntityConverter.foilhole_to_request(foilhole))

    def get_foilhole_micrographs(self, foilhole_id: str) -> list[MicrographResponse]:
        """Get all micrographs for a specific foil hole (``foilhole_id`` is the foil hole's uuid)."""
        return self.request(ops.get_foilhole_micrographs(foilhole_id))

    def create_foilhole_micrograph(self, micrograph: MicrographData) -> MicrographResponse:
        """Create a new micrograph for a specific foil hole."""
        return self.create_micrograph_request(EntityConverter.micrograph_to_request(micrograph))

    def update_micrograph(self, micrograph: MicrographData) -> MicrographResponse:
        """Update a micrograph."""
        return self.update_micrograph_request(EntityConverter.micrograph_to_request(micrograph))

    def acknowledge_instruction(
        self,
        agent_id: str,
        session_id: str,
        instruction_id: str,
        acknowledgement: AgentInstructionAcknowledgement,
    ) -> AgentInstructionAcknowledgementResponse:
        """Acknowledge an instruction (one POST under the retry policy; see ``SSEAgentClient`` for the
        SmartEM-aware variant that treats a repeated ack as success)."""
        return self.request(ops.acknowledge(agent_id, session_id, instruction_id, acknowledgement))
