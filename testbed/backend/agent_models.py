"""Request bodies of the agent-facing and debug endpoints (smartem-reference.md sections 3, 4, 7, 9, 12).

``AgentInstructionAcknowledgement`` forbids unknown fields in both modes, because SmartEM's does (an extra
field is a 422 on the real backend too). The debug bodies are plain dicts on SmartEM, so smartem mode parses
them leniently through :mod:`testbed.backend.bodies`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentInstructionAcknowledgement(_Body):
    """``POST /agent/{agent_id}/session/{session_id}/instructions/{instruction_id}/ack``."""

    status: Literal["received", "processed", "failed", "declined"]
    result: str | None = None
    error_message: str | None = None
    processing_time_ms: int | None = None
    processed_at: datetime | None = None


class AgentLogEntry(_Body):
    """One shipped log record."""

    timestamp: datetime
    level: str
    logger_name: str
    message: str


class AgentLogBatchRequest(_Body):
    """``POST /agent/{agent_id}/session/{session_id}/logs``."""

    logs: list[AgentLogEntry]


class SessionCreateRequest(_Body):
    """``POST /debug/sessions/create`` (``session_id`` optional) and ``/debug/sessions/create-managed``.

    Defaults are SmartEM's debug endpoint defaults."""

    session_id: str | None = None
    agent_id: str = "test-agent"
    acquisition_uuid: str | None = None
    name: str = "Test Session"
    description: str = "Debug session for testing"
    experimental_parameters: dict[str, Any] = Field(default_factory=dict)


class InstructionCreateRequest(_Body):
    """``POST /debug/session/{session_id}/create-instruction``; defaults are SmartEM's.

    ``expires_in_minutes`` may be fractional (tests use seconds); ``null`` or 0 means no expiry, as on
    SmartEM. ``instruction_id`` is a testbed extension for callers that need a known id."""

    instruction_type: str = "test.instruction"
    payload: Any = Field(default_factory=lambda: {"test": True})
    sequence_number: int | None = None
    priority: str = "normal"
    expires_in_minutes: float | None = Field(default=60.0, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    instruction_id: str | None = None


__all__ = [
    "AgentInstructionAcknowledgement",
    "AgentLogBatchRequest",
    "AgentLogEntry",
    "InstructionCreateRequest",
    "SessionCreateRequest",
]
