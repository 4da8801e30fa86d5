"""Request specifications: every SmartEM call as data, built once and sent by either the sync or the async
client.

A :class:`RequestSpec` holds the method, path (from :mod:`backend_client.paths`), JSON body, the response
parser and the entity the call is about. The clients only differ in how they send it (``httpx.Client`` vs
``httpx.AsyncClient``, tenacity ``Retrying`` vs ``AsyncRetrying``); building requests and interpreting
responses happens here, once.

A public module: the agent's per-kind table (``agent.ingest.kinds``) builds its specs here and sends them with
``client.request(spec)``, so a new endpoint is one function in this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from backend_client import paths
from backend_client.errors import InvalidResponseError, error_for_response
from backend_client.models import (
    AcquisitionCreateRequest,
    AcquisitionResponse,
    AgentHeartbeatResponse,
    AgentInstructionAcknowledgement,
    AgentInstructionAcknowledgementResponse,
    AgentLogBatchRequest,
    AgentLogBatchResponse,
    AgentLogEntry,
    AtlasCreateRequest,
    AtlasResponse,
    AtlasTileCreateRequest,
    AtlasTileGridSquarePositionResponse,
    AtlasTileResponse,
    FoilHoleCreateRequest,
    FoilHoleResponse,
    GridCreateRequest,
    GridResponse,
    GridSquareBatchCreateRequest,
    GridSquareBatchCreateResponse,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    GridSquareResponse,
    InstructionCreateRequest,
    InstructionCreateResponse,
    MicrographBatchCreateRequest,
    MicrographCreateRequest,
    MicrographResponse,
    SessionCreateRequest,
    SessionResponse,
    StatusResponse,
    to_wire,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: SmartEM stores at most this many log records per request.
LOG_BATCH_MAX = 500


@dataclass(frozen=True)
class RequestSpec(Generic[T]):
    """One backend call, independent of the transport that sends it.

    Attributes:
        operation: name used in logs and retry records (e.g. ``create_gridsquare``).
        method: HTTP method.
        path: request path (already encoded).
        parse: turns a 2xx response into the return value; raises ``InvalidResponseError``.
        json: JSON-able body, or ``None``.
        params: query parameters.
        entity_kind: kind of the entity created/updated (errors carry it so a caller can GET it).
        entity_uuid: uuid of that entity.
        absent_statuses: statuses meaning "not there" (405 too for optional extensions).
        retry: whether the client's retry policy applies (heartbeats are not retried: the next beat is).
    """

    operation: str
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str | int] | None = None
    entity_kind: str | None = None
    entity_uuid: str | None = None
    absent_statuses: frozenset[int] = field(default=frozenset({404}))
    retry: bool = True

    def build_request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """Build the ``httpx.Request`` on ``client`` (base URL, auth and timeouts come from the client)."""
        return client.build_request(self.method, self.path, json=self.json, params=self.params)

    def handle(self, response: httpx.Response) -> T:
        """Interpret a fully read response: the parsed value for 2xx, else the mapped
        :class:`BackendError`."""
        if response.is_success:
            return self.parse(response)
        raise error_for_response(
            response,
            entity_kind=self.entity_kind,
            entity_uuid=self.entity_uuid,
            absent_statuses=self.absent_statuses,
        )

    def log_outcome(self, logger: logging.Logger, response: httpx.Response) -> None:
        """Debug-log the request line and status (never headers or bodies)."""
        logger.debug(
            "%s %s -> %s",
            self.method,
            self.path,
            response.status_code,
            extra={
                "event": "backend.request",
                "operation": self.operation,
                "status_code": response.status_code,
            },
        )


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise InvalidResponseError(
            f"{response.request.method} {response.request.url.path}: response is not JSON",
            status_code=response.status_code,
            method=response.request.method,
            path=response.request.url.path,
        ) from exc


def _validated(adapter: TypeAdapter[T], response: httpx.Response, body: Any) -> T:
    try:
        return adapter.validate_python(body)
    except ValidationError as exc:
        raise InvalidResponseError(
            f"{response.request.method} {response.request.url.path}: unexpected response shape "
            f"({exc.error_count()} validation errors)",
            status_code=response.status_code,
            method=response.request.method,
            path=response.request.url.path,
        ) from exc


def parse_model(model: type[M]) -> Callable[[httpx.Response], M]:
    """Parser for a single response model."""
    adapter = TypeAdapter(model)
    return lambda response: _validated(adapter, response, _body(response))


def parse_model_list(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    """Parser for a JSON list of response models."""
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda response: _validated(adapter, response, _body(response))


def parse_bool(response: httpx.Response) -> bool:
    """Parser for the ``registered`` endpoints, which answer a bare JSON boolean."""
    return _validated(TypeAdapter(bool), response, _body(response))


def parse_json(response: httpx.Response) -> Any:
    """Parser returning the decoded JSON as is (debug endpoints)."""
    return _body(response)


_MICROGRAPH_LIST = TypeAdapter(list[MicrographResponse])


def parse_micrograph_batch(response: httpx.Response) -> list[MicrographResponse]:
    """The batch extension may answer a list or ``{"micrographs": [...]}``; accept both."""
    body = _body(response)
    if isinstance(body, dict) and "micrographs" in body:
        body = body["micrographs"]
    return _validated(_MICROGRAPH_LIST, response, body)


def _entity(
    operation: str,
    method: str,
    path: str,
    parse: Callable[[httpx.Response], T],
    kind: str,
    uuid: str,
    body: Any,
) -> RequestSpec[T]:
    return RequestSpec(operation, method, path, parse, json=body, entity_kind=kind, entity_uuid=uuid)


# --- status -------------------------------------------------------------------------------------------------


def get_status() -> RequestSpec[StatusResponse]:
    """``GET /status``."""
    return RequestSpec("get_status", "GET", paths.STATUS, parse_model(StatusResponse))


def get_entity(kind: str, uuid: str) -> RequestSpec[dict[str, Any]]:
    """``GET`` one entity by kind and uuid (confirms a create that SmartEM answered with 500)."""
    try:
        template = paths.ENTITY_PATHS[kind]
    except KeyError:
        raise ValueError(
            f"unknown entity kind {kind!r}; expected one of {sorted(paths.ENTITY_PATHS)}"
        ) from None
    adapter = TypeAdapter(dict[str, Any])
    return RequestSpec(
        f"get_{kind}",
        "GET",
        paths.build(template, uuid=uuid),
        lambda response: _validated(adapter, response, _body(response)),
        entity_kind=kind,
        entity_uuid=uuid,
    )


# --- acquisitions and grids ---------------------------------------------------------------------------------


def create_acquisition(req: AcquisitionCreateRequest) -> RequestSpec[AcquisitionResponse]:
    """``POST /acquisitions``."""
    return _entity(
        "create_acquisition", "POST", paths.ACQUISITIONS, parse_model(AcquisitionResponse), "acquisition",
        req.uuid, to_wire(req),
    )  # fmt: skip


def update_acquisition(req: AcquisitionCreateRequest) -> RequestSpec[AcquisitionResponse]:
    """``PUT /acquisitions/{uuid}``."""
    path = paths.build(paths.ACQUISITION, acquisition_uuid=req.uuid)
    return _entity(
        "update_acquisition",
        "PUT",
        path,
        parse_model(AcquisitionResponse),
        "acquisition",
        req.uuid,
        to_wire(req),
    )


def get_acquisition_grids(acquisition_uuid: str) -> RequestSpec[list[GridResponse]]:
    """``GET /acquisitions/{uuid}/grids``."""
    path = paths.build(paths.ACQUISITION_GRIDS, acquisition_uuid=acquisition_uuid)
    return RequestSpec("get_acquisition_grids", "GET", path, parse_model_list(GridResponse))


def create_grid(req: GridCreateRequest) -> RequestSpec[GridResponse]:
    """``POST /acquisitions/{acquisition_uuid}/grids``."""
    path = paths.build(paths.ACQUISITION_GRIDS, acquisition_uuid=req.acquisition_uuid)
    return _entity("create_grid", "POST", path, parse_model(GridResponse), "grid", req.uuid, to_wire(req))


def update_grid(req: GridCreateRequest) -> RequestSpec[GridResponse]:
    """``PUT /grids/{uuid}``."""
    path = paths.build(paths.GRID, grid_uuid=req.uuid)
    return _entity("update_grid", "PUT", path, parse_model(GridResponse), "grid", req.uuid, to_wire(req))


def mark_grid_registered(grid_uuid: str) -> RequestSpec[bool]:
    """``POST /grids/{uuid}/registered``: all squares of the grid are registered at low mag."""
    path = paths.build(paths.GRID_REGISTERED, grid_uuid=grid_uuid)
    return RequestSpec(
        "mark_grid_registered", "POST", path, parse_bool, entity_kind="grid", entity_uuid=grid_uuid
    )


# --- atlas and tiles ----------------------------------------------------------------------------------------


def create_atlas(req: AtlasCreateRequest) -> RequestSpec[AtlasResponse]:
    """``POST /grids/{grid_uuid}/atlas`` (tiles embedded)."""
    path = paths.build(paths.GRID_ATLAS, grid_uuid=req.grid_uuid)
    return _entity("create_atlas", "POST", path, parse_model(AtlasResponse), "atlas", req.uuid, to_wire(req))


def update_atlas(req: AtlasCreateRequest) -> RequestSpec[AtlasResponse]:
    """``PUT /atlases/{uuid}``."""
    path = paths.build(paths.ATLAS, atlas_uuid=req.uuid)
    return _entity("update_atlas", "PUT", path, parse_model(AtlasResponse), "atlas", req.uuid, to_wire(req))


def get_atlas_tiles_by_atlas(atlas_uuid: str) -> RequestSpec[list[AtlasTileResponse]]:
    """``GET /atlases/{uuid}/tiles``."""
    path = paths.build(paths.ATLAS_TILES, atlas_uuid=atlas_uuid)
    return RequestSpec("get_atlas_tiles_by_atlas", "GET", path, parse_model_list(AtlasTileResponse))


def create_atlas_tile(req: AtlasTileCreateRequest) -> RequestSpec[AtlasTileResponse]:
    """``POST /atlases/{atlas_uuid}/tiles``."""
    path = paths.build(paths.ATLAS_TILES, atlas_uuid=req.atlas_uuid)
    return _entity(
        "create_atlas_tile",
        "POST",
        path,
        parse_model(AtlasTileResponse),
        "atlas_tile",
        req.uuid,
        to_wire(req),
    )


def link_tile_gridsquare(
    tile_uuid: str, gridsquare_uuid: str, position: GridSquarePositionRequest
) -> RequestSpec[AtlasTileGridSquarePositionResponse]:
    """``POST /atlas-tiles/{tile_uuid}/gridsquares/{gridsquare_uuid}``: one link."""
    path = paths.build(paths.ATLAS_TILE_GRIDSQUARE, tile_uuid=tile_uuid, gridsquare_uuid=gridsquare_uuid)
    return RequestSpec(
        "link_tile_gridsquare",
        "POST",
        path,
        parse_model(AtlasTileGridSquarePositionResponse),
        json=to_wire(position),
        entity_kind="atlas_tile",
        entity_uuid=tile_uuid,
    )


def link_tile_gridsquares(
    tile_uuid: str, positions: Sequence[GridSquarePositionRequest]
) -> RequestSpec[list[AtlasTileGridSquarePositionResponse]]:
    """``POST /atlas-tiles/{tile_uuid}/gridsquares``: all links of one tile in one request."""
    path = paths.build(paths.ATLAS_TILE_GRIDSQUARES, tile_uuid=tile_uuid)
    return RequestSpec(
        "link_tile_gridsquares",
        "POST",
        path,
        parse_model_list(AtlasTileGridSquarePositionResponse),
        json=[to_wire(p) for p in positions],
        entity_kind="atlas_tile",
        entity_uuid=tile_uuid,
    )


# --- grid squares -------------------------------------------------------------------------------------------


def create_gridsquare(req: GridSquareCreateRequest) -> RequestSpec[GridSquareResponse]:
    """``POST /grids/{grid_uuid}/gridsquares``."""
    path = paths.build(paths.GRID_GRIDSQUARES, grid_uuid=req.grid_uuid)
    return _entity(
        "create_gridsquare",
        "POST",
        path,
        parse_model(GridSquareResponse),
        "gridsquare",
        req.uuid,
        to_wire(req),
    )


def create_gridsquares_batch(
    grid_uuid: str, reqs: Sequence[GridSquareCreateRequest]
) -> RequestSpec[list[GridSquareResponse]]:
    """``POST /grids/{grid_uuid}/gridsquares/batch`` (one transaction, at most 1000 squares)."""
    body = GridSquareBatchCreateRequest(gridsquares=list(reqs))
    path = paths.build(paths.GRID_GRIDSQUARES_BATCH, grid_uuid=grid_uuid)
    batch = parse_model(GridSquareBatchCreateResponse)
    return RequestSpec(
        "create_gridsquares_batch",
        "POST",
        path,
        lambda response: batch(response).gridsquares,
        json=to_wire(body),
        entity_kind="grid",
        entity_uuid=grid_uuid,
    )


def update_gridsquare(req: GridSquareCreateRequest) -> RequestSpec[GridSquareResponse]:
    """``PUT /gridsquares/{uuid}``."""
    path = paths.build(paths.GRIDSQUARE, gridsquare_uuid=req.uuid)
    return _entity(
        "update_gridsquare",
        "PUT",
        path,
        parse_model(GridSquareResponse),
        "gridsquare",
        req.uuid,
        to_wire(req),
    )


def get_grid_gridsquares(grid_uuid: str) -> RequestSpec[list[GridSquareResponse]]:
    """``GET /grids/{uuid}/gridsquares``."""
    path = paths.build(paths.GRID_GRIDSQUARES, grid_uuid=grid_uuid)
    return RequestSpec("get_grid_gridsquares", "GET", path, parse_model_list(GridSquareResponse))


def mark_gridsquare_registered(gridsquare_uuid: str, count: int | None) -> RequestSpec[bool]:
    """``POST /gridsquares/{uuid}/registered?count=N``: all foil holes of the square are registered."""
    path = paths.build(paths.GRIDSQUARE_REGISTERED, gridsquare_uuid=gridsquare_uuid)
    return RequestSpec(
        "mark_gridsquare_registered",
        "POST",
        path,
        parse_bool,
        params={"count": count} if count is not None else None,
        entity_kind="gridsquare",
        entity_uuid=gridsquare_uuid,
    )


# --- foil holes and micrographs -----------------------------------------------------------------------------


def create_foilholes(
    gridsquare_uuid: str, reqs: Sequence[FoilHoleCreateRequest]
) -> RequestSpec[list[FoilHoleResponse]]:
    """``POST /gridsquares/{uuid}/foilholes`` (a list: SmartEM's foil-hole batch)."""
    path = paths.build(paths.GRIDSQUARE_FOILHOLES, gridsquare_uuid=gridsquare_uuid)
    return RequestSpec(
        "create_foilholes",
        "POST",
        path,
        parse_model_list(FoilHoleResponse),
        json=[to_wire(r) for r in reqs],
        entity_kind="gridsquare",
        entity_uuid=gridsquare_uuid,
    )


def update_foilhole(req: FoilHoleCreateRequest) -> RequestSpec[FoilHoleResponse]:
    """``PUT /foilholes/{uuid}``."""
    path = paths.build(paths.FOILHOLE, foilhole_uuid=req.uuid)
    return _entity(
        "update_foilhole", "PUT", path, parse_model(FoilHoleResponse), "foilhole", req.uuid, to_wire(req)
    )


def get_gridsquare_foilholes(gridsquare_uuid: str) -> RequestSpec[list[FoilHoleResponse]]:
    """``GET /gridsquares/{uuid}/foilholes``."""
    path = paths.build(paths.GRIDSQUARE_FOILHOLES, gridsquare_uuid=gridsquare_uuid)
    return RequestSpec("get_gridsquare_foilholes", "GET", path, parse_model_list(FoilHoleResponse))


def _foilhole_uuid_of(req: MicrographCreateRequest) -> str:
    if not req.foilhole_uuid:
        raise ValueError(
            f"micrograph {req.uuid} has no foilhole_uuid: its parent must be known before posting"
        )
    return req.foilhole_uuid


def create_micrograph(req: MicrographCreateRequest) -> RequestSpec[MicrographResponse]:
    """``POST /foilholes/{foilhole_uuid}/micrographs``."""
    path = paths.build(paths.FOILHOLE_MICROGRAPHS, foilhole_uuid=_foilhole_uuid_of(req))
    return _entity(
        "create_micrograph",
        "POST",
        path,
        parse_model(MicrographResponse),
        "micrograph",
        req.uuid,
        to_wire(req),
    )


def create_micrographs_batch(
    reqs: Sequence[MicrographCreateRequest],
) -> RequestSpec[list[MicrographResponse]]:
    """``POST /foilholes/micrographs/batch`` (testbed extension; 404/405 -> ``NotFoundError`` on SmartEM)."""
    for req in reqs:
        _foilhole_uuid_of(req)
    body = MicrographBatchCreateRequest(micrographs=list(reqs))
    return RequestSpec(
        "create_micrographs_batch",
        "POST",
        paths.MICROGRAPHS_BATCH,
        parse_micrograph_batch,
        json=to_wire(body),
        absent_statuses=frozenset({404, 405}),
    )


def update_micrograph(req: MicrographCreateRequest) -> RequestSpec[MicrographResponse]:
    """``PUT /micrographs/{uuid}``."""
    path = paths.build(paths.MICROGRAPH, micrograph_uuid=req.uuid)
    return _entity(
        "update_micrograph",
        "PUT",
        path,
        parse_model(MicrographResponse),
        "micrograph",
        req.uuid,
        to_wire(req),
    )


def get_foilhole_micrographs(foilhole_uuid: str) -> RequestSpec[list[MicrographResponse]]:
    """``GET /foilholes/{uuid}/micrographs``."""
    path = paths.build(paths.FOILHOLE_MICROGRAPHS, foilhole_uuid=foilhole_uuid)
    return RequestSpec("get_foilhole_micrographs", "GET", path, parse_model_list(MicrographResponse))


# --- agent communication ------------------------------------------------------------------------------------


def acknowledge(
    agent_id: str, session_id: str, instruction_id: str, ack: AgentInstructionAcknowledgement
) -> RequestSpec[AgentInstructionAcknowledgementResponse]:
    """``POST .../instructions/{instruction_id}/ack`` with only SmartEM's ack fields (extras are a 422)."""
    path = paths.build(
        paths.AGENT_ACK, agent_id=agent_id, session_id=session_id, instruction_id=instruction_id
    )
    return RequestSpec(
        "acknowledge_instruction",
        "POST",
        path,
        parse_model(AgentInstructionAcknowledgementResponse),
        json=ack.model_dump(mode="json", exclude_none=True),
    )


def heartbeat(agent_id: str, session_id: str) -> RequestSpec[AgentHeartbeatResponse]:
    """``POST .../heartbeat`` (404 when the backend sees no active SSE connection). Not retried."""
    path = paths.build(paths.AGENT_HEARTBEAT, agent_id=agent_id, session_id=session_id)
    return RequestSpec("send_heartbeat", "POST", path, parse_model(AgentHeartbeatResponse), retry=False)


def ship_logs(
    agent_id: str, session_id: str, records: Iterable[AgentLogEntry]
) -> list[RequestSpec[AgentLogBatchResponse]]:
    """``POST .../logs``, split into requests of at most :data:`LOG_BATCH_MAX` records."""
    items = list(records)
    path = paths.build(paths.AGENT_LOGS, agent_id=agent_id, session_id=session_id)
    return [
        RequestSpec(
            "ship_logs",
            "POST",
            path,
            parse_model(AgentLogBatchResponse),
            json=to_wire(AgentLogBatchRequest(logs=items[start : start + LOG_BATCH_MAX])),
        )
        for start in range(0, len(items), LOG_BATCH_MAX)
    ]


def create_session(req: SessionCreateRequest) -> RequestSpec[SessionResponse]:
    """SmartEM's ``POST /debug/sessions/create`` (the only way to make a session there)."""
    return RequestSpec(
        "create_session", "POST", paths.DEBUG_SESSIONS_CREATE, parse_model(SessionResponse), json=to_wire(req)
    )


def create_instruction(
    session_id: str, req: InstructionCreateRequest
) -> RequestSpec[InstructionCreateResponse]:
    """SmartEM's ``POST /debug/session/{session_id}/create-instruction``."""
    path = paths.build(paths.DEBUG_CREATE_INSTRUCTION, session_id=session_id)
    return RequestSpec(
        "create_instruction", "POST", path, parse_model(InstructionCreateResponse), json=to_wire(req)
    )
