"""Value types of the executor: the received instruction, its lane, priority rank and final outcome."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

JsonDict = dict[str, Any]

#: Numeric rank of the backend's priority strings. SmartEM sorts them as text (so "normal" beats "critical");
#: the agent orders them by meaning. Unknown strings rank as "normal".
PRIORITY_RANK: dict[str, int] = {"critical": 3, "high": 2, "normal": 1, "low": 0}


def priority_rank(priority: str | None) -> int:
    """The numeric rank of a priority string (higher runs first)."""
    return PRIORITY_RANK.get((priority or "normal").strip().lower(), PRIORITY_RANK["normal"])


class Lane(enum.StrEnum):
    """Execution lane: device actions run one at a time; queries run beside them."""

    DEVICE = "device"
    QUERY = "query"


class AckStatus(enum.StrEnum):
    """Final acknowledgement statuses the agent sends (never ``received``: SmartEM acks are one-shot)."""

    PROCESSED = "processed"
    FAILED = "failed"
    DECLINED = "declined"


class InvalidInstructionEvent(ValueError):
    """An SSE ``instruction`` event lacks what the agent needs to journal it (no usable instruction id)."""


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    # SmartEM serialises naive UTC datetimes; treat a missing zone as UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class ReceivedInstruction(BaseModel):
    """The fields of an SSE ``instruction`` event the executor uses (other fields are ignored, not rejected).

    Parsing is lenient on purpose: an event whose payload is not an object is still journaled, then declined
    by the payload model, so the backend always learns why.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    instruction_id: str = Field(min_length=1, max_length=200)
    instruction_type: str = Field(default="", max_length=200)
    payload: Any = None
    sequence_number: int | None = None
    priority: str = "normal"
    created_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: JsonDict = Field(default_factory=dict)

    @field_validator("created_at", "expires_at", mode="before")
    @classmethod
    def _times(cls, value: Any) -> datetime | None:
        return _parse_time(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> str:
        return "normal" if value is None else str(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return {} if value is None else value

    @classmethod
    def from_event(cls, data: Any) -> ReceivedInstruction:
        """Parse an event's ``data`` (a dict, a JSON string or a pydantic model)."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        elif isinstance(data, str | bytes):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise InvalidInstructionEvent(f"instruction event is {type(data).__name__}, not an object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInstructionEvent(f"unusable instruction event: {exc}") from exc


@dataclass(frozen=True)
class Outcome:
    """The final result of one instruction: what its single acknowledgement will carry."""

    status: AckStatus
    result: JsonDict | None = None
    error_message: str | None = None

    @classmethod
    def processed(cls, result: JsonDict) -> Outcome:
        """A successful run with ``result``."""
        return cls(AckStatus.PROCESSED, result, None)

    @classmethod
    def declined(cls, message: str, /, **details: Any) -> Outcome:
        """Refused without touching the device; ``details`` go into the result."""
        return cls(AckStatus.DECLINED, {"reason": message, **details}, message)

    @classmethod
    def failed(cls, message: str, /, **details: Any) -> Outcome:
        """Attempted and failed; ``details`` go into the result."""
        return cls(AckStatus.FAILED, {"error": message, **details} if details else None, message)


@dataclass(frozen=True)
class JournalEntry:
    """One row of the instruction journal."""

    instruction_id: str
    instruction_type: str
    payload: Any
    priority: str
    sequence_number: int | None
    created_at: datetime | None
    expires_at: datetime | None
    lane: Lane
    state: str
    deliveries: int
    outcome: AckStatus | None
    result_json: str | None
    error_message: str | None
    processing_time_ms: int | None
    ack_state: str
    ack_attempts: int
    finished_at: datetime | None
