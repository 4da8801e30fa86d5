"""Wire models of the SmartEM API: requests (re-exported from ``converters.requests``), responses, agent
communication (acknowledgements, heartbeats, logs, sessions) and the SSE instruction-stream events.

Field names and types follow ``smartem-reference.md`` sections 2-7 and 12. Response models ignore unknown
fields and give optional fields defaults, so a backend that adds columns (or omits nullable ones) still
parses; status values are kept as plain strings because SmartEM stores enums by name and returns them by value
(compare them case-insensitively). Bodies the agent *sends* forbid unknown fields: SmartEM rejects extra ack
fields with 422.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from converters.requests import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    AtlasTileCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareBatchCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographBatchCreateRequest,
    MicrographCreateRequest,
    WireDatetime,
    to_wire,
)


class _Response(BaseModel):
    """Base for response bodies: tolerant of fields the backend adds."""

    model_config = ConfigDict(extra="ignore")


class _Body(BaseModel):
    """Base for bodies the agent sends that are not entity requests: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


# --- entity responses ---------------------------------------------------------------------------------------


class AcquisitionResponse(_Response):
    """``AcquisitionResponse`` of ``POST/PUT/GET /acquisitions``."""

    uuid: str
    name: str | None = None
    status: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    paused_time: datetime | None = None
    storage_path: str | None = None
    atlas_path: str | None = None
    clustering_mode: str | None = None
    clustering_radius: str | None = None
    instrument_model: str | None = None
    instrument_id: str | None = None
    computer_name: str | None = None


class GridResponse(_Response):
    """``GridResponse`` of the grid endpoints."""

    uuid: str
    acquisition_uuid: str | None = None
    status: str | None = None
    name: str | None = None
    data_dir: str | None = None
    atlas_dir: str | None = None
    scan_start_time: datetime | None = None
    scan_end_time: datetime | None = None


class AtlasTileResponse(_Response):
    """``AtlasTileResponse`` (embedded in atlases and returned by the tile endpoints)."""

    uuid: str
    atlas_uuid: str | None = None
    tile_id: str | None = None
    position_x: int | None = None
    position_y: int | None = None
    size_x: int | None = None
    size_y: int | None = None
    file_format: str | None = None
    base_filename: str | None = None


class AtlasResponse(_Response):
    """``AtlasResponse`` of ``POST /grids/{grid_uuid}/atlas`` and the atlas getters."""

    uuid: str
    grid_uuid: str | None = None
    atlas_id: str | None = None
    acquisition_date: datetime | None = None
    storage_folder: str | None = None
    description: str | None = None
    name: str | None = None
    tiles: list[AtlasTileResponse] | None = None


class AtlasTileGridSquarePositionResponse(_Response):
    """One tile-to-square link of ``POST /atlas-tiles/{tile_uuid}/gridsquares``."""

    atlastile_uuid: str | None = None
    gridsquare_uuid: str | None = None
    center_x: int | None = None
    center_y: int | None = None
    size_width: int | None = None
    size_height: int | None = None


class GridSquareResponse(_Response):
    """``GridSquareResponse`` of the grid-square endpoints."""

    uuid: str
    gridsquare_id: str | None = None
    grid_uuid: str | None = None
    status: str | None = None
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
    acquisition_datetime: datetime | None = None
    defocus: float | None = None
    magnification: float | None = None
    pixel_size: float | None = None
    detector_name: str | None = None
    applied_defocus: float | None = None


class GridSquareBatchCreateResponse(_Response):
    """Response of ``POST /grids/{grid_uuid}/gridsquares/batch``."""

    gridsquares: list[GridSquareResponse]


class FoilHoleResponse(_Response):
    """``FoilHoleResponse`` of the foil-hole endpoints."""

    uuid: str
    gridsquare_id: str | None = None
    gridsquare_uuid: str | None = None
    foilhole_id: str | None = None
    status: str | None = None
    center_x: float | None = None
    center_y: float | None = None
    quality: float | None = None
    rotation: float | None = None
    size_width: float | None = None
    size_height: float | None = None
    x_location: int | None = None
    y_location: int | None = None
    x_stage_position: float | None = None
    y_stage_position: float | None = None
    diameter: int | None = None
    is_near_grid_bar: bool | None = None


class MicrographResponse(_Response):
    """``MicrographResponse`` of the micrograph endpoints."""

    uuid: str
    foilhole_uuid: str | None = None
    foilhole_id: str | None = None
    micrograph_id: str | None = None
    location_id: str | None = None
    status: str | None = None
    high_res_path: str | None = None
    manifest_file: str | None = None
    acquisition_datetime: datetime | None = None
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


class StatusResponse(_Response):
    """``GET /status`` (auth-exempt on SmartEM)."""

    status: str
    service: str | None = None
    version: str | None = None
    timestamp: str | None = None
    configuration: dict[str, Any] | None = None


# --- agent communication ------------------------------------------------------------------------------------

AckStatus = Literal["received", "processed", "failed", "declined"]


class AgentInstructionAcknowledgement(_Body):
    """Body of ``POST .../instructions/{instruction_id}/ack``. Exactly SmartEM's fields (it 422s on
    extras)."""

    status: AckStatus
    result: str | None = None
    error_message: str | None = None
    processing_time_ms: int | None = Field(default=None, ge=0)
    processed_at: WireDatetime | None = None


class AgentInstructionAcknowledgementResponse(_Response):
    """``{"status":"success","instruction_id","acknowledged_at","agent_id","session_id"}``.

    ``status`` is ``"already_acknowledged"`` when the client synthesised it from SmartEM's answer to a
    repeated ack (400 "invalid status"): the backend holds an ack for the instruction, this one was not
    stored.
    """

    status: str
    instruction_id: str
    acknowledged_at: str | None = None
    agent_id: str | None = None
    session_id: str | None = None


AckOutcomeKind = Literal["acknowledged", "already_acknowledged", "unconfirmed"]


class AckResult(BaseModel):
    """What happened to an acknowledgement after the client's retries.

    Attributes:
        outcome: ``acknowledged`` (200), ``already_acknowledged`` (the backend said the instruction is no
        longer
            ``sent``: a previous ack landed), or ``unconfirmed`` (retries exhausted; see ``last_error``).
        attempts: POSTs made.
        maybe_delivered: an attempt failed after the request may have reached the server (timeout, dropped
            connection), so an ``unconfirmed`` ack may in fact be stored.
        response: the server's (or synthesised) response when the outcome is not ``unconfirmed``.
        last_error: the last error's message when the outcome is ``unconfirmed``.
        last_status: the last HTTP status seen, if any.
    """

    outcome: AckOutcomeKind
    attempts: int
    maybe_delivered: bool = False
    response: AgentInstructionAcknowledgementResponse | None = None
    last_error: str | None = None
    last_status: int | None = None
    _error: Exception | None = PrivateAttr(default=None)

    @property
    def error(self) -> Exception | None:
        """The last exception when the outcome is ``unconfirmed`` (not serialised)."""
        return self._error

    def with_error(self, error: Exception | None) -> AckResult:
        """Attach the last exception (returns ``self``)."""
        self._error = error
        return self


class AgentHeartbeatResponse(_Response):
    """``POST /agent/{agent_id}/session/{session_id}/heartbeat``."""

    status: str
    agent_id: str | None = None
    session_id: str | None = None
    heartbeat_timestamp: str | None = None
    connection_id: str | None = None


class AgentLogEntry(_Body):
    """One shipped log record (the timestamp goes out as naive UTC, like every datetime sent to SmartEM)."""

    timestamp: WireDatetime
    level: str
    logger_name: str
    message: str

    @classmethod
    def now(cls, level: str, logger_name: str, message: str) -> AgentLogEntry:
        """A record stamped with the current UTC time."""
        return cls(timestamp=datetime.now(UTC), level=level, logger_name=logger_name, message=message)


class AgentLogBatchRequest(_Body):
    """Body of ``POST /agent/{agent_id}/session/{session_id}/logs`` (SmartEM stores at most 500 per
    request)."""

    logs: list[AgentLogEntry]


class AgentLogBatchResponse(_Response):
    """``{"stored": n}``."""

    stored: int


class SessionCreateRequest(_Body):
    """Body of SmartEM's ``POST /debug/sessions/create`` (sessions exist only through debug endpoints)."""

    agent_id: str
    name: str
    session_id: str | None = None
    acquisition_uuid: str | None = None
    description: str | None = None
    experimental_parameters: dict[str, Any] | None = None


class SessionResponse(_Response):
    """A session as returned by the debug endpoints."""

    session_id: str
    agent_id: str | None = None
    acquisition_uuid: str | None = None
    name: str | None = None
    status: str | None = None


class InstructionCreateRequest(_Body):
    """Body of SmartEM's ``POST /debug/session/{session_id}/create-instruction``."""

    instruction_type: str = "test.instruction"
    payload: dict[str, Any] = Field(default_factory=lambda: {"test": True})
    sequence_number: int | None = None
    priority: str = "normal"
    expires_in_minutes: int | None = 60
    metadata: dict[str, Any] | None = None


class InstructionCreateResponse(_Response):
    """Response of the debug create-instruction endpoint (at least the new ``instruction_id``)."""

    instruction_id: str
    session_id: str | None = None
    status: str | None = None


# --- SSE events ---------------------------------------------------------------------------------------------


class _Event(BaseModel):
    """Base of SSE event payloads: unknown fields are kept (``model_dump`` gives back the server's dict)."""

    model_config = ConfigDict(extra="allow")


class ConnectionEvent(_Event):
    """``connection``: the server accepted the stream."""

    type: Literal["connection"] = "connection"
    agent_id: str | None = None
    session_id: str | None = None
    connection_id: str | None = None
    status: str | None = None


class InstructionEvent(_Event):
    """``instruction``: one instruction to execute (dedupe by ``instruction_id``: redelivery happens)."""

    type: Literal["instruction"] = "instruction"
    instruction_id: str
    agent_id: str | None = None
    session_id: str | None = None
    instruction_type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    sequence_number: int | None = None
    priority: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class HeartbeatEvent(_Event):
    """``heartbeat``: sent by the server after 30 s without notifications."""

    type: Literal["heartbeat"] = "heartbeat"
    timestamp: str | None = None
    connection_id: str | None = None


class ErrorEvent(_Event):
    """``error``: the server is about to end the stream (``session_validation_failed`` is a config error)."""

    type: Literal["error"] = "error"
    error: str | None = None
    message: str | None = None


StreamEvent = Annotated[
    ConnectionEvent | InstructionEvent | HeartbeatEvent | ErrorEvent, Field(discriminator="type")
]
"""Union of the parsed SSE event payloads, discriminated by ``type``."""


__all__ = [
    "AckOutcomeKind",
    "AckResult",
    "AckStatus",
    "AcquisitionCreateRequest",
    "AcquisitionResponse",
    "AgentHeartbeatResponse",
    "AgentInstructionAcknowledgement",
    "AgentInstructionAcknowledgementResponse",
    "AgentLogBatchRequest",
    "AgentLogBatchResponse",
    "AgentLogEntry",
    "AtlasCreateRequest",
    "AtlasResponse",
    "AtlasTileCreateRequest",
    "AtlasTileGridSquarePositionResponse",
    "AtlasTileResponse",
    "ConnectionEvent",
    "ErrorEvent",
    "FoilHoleCreateRequest",
    "FoilHoleResponse",
    "GridCreateRequest",
    "GridResponse",
    "GridSquareBatchCreateRequest",
    "GridSquareBatchCreateResponse",
    "GridSquareCreateRequest",
    "GridSquarePositionRequest",
    "GridSquareResponse",
    "HeartbeatEvent",
    "InstructionCreateRequest",
    "InstructionCreateResponse",
    "InstructionEvent",
    "MicrographBatchCreateRequest",
    "MicrographCreateRequest",
    "MicrographResponse",
    "SessionCreateRequest",
    "SessionResponse",
    "StatusResponse",
    "StreamEvent",
    "to_wire",
]
