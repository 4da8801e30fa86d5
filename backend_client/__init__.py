"""SmartEM-compatible backend client: HTTP (sync and async), the SSE instruction stream with its acknowledgements
and heartbeats, auth, one retry policy, one error hierarchy, the wire models, and an optional AMQP event
publisher.

Layering: ``backend_client`` imports ``converters`` (request and domain models), never ``agent`` or ``testbed``.
"""

from backend_client.acks import is_already_acknowledged
from backend_client.amqp import AmqpEventPublisher, AmqpPublisherConfig, canonical_json, message_id_for
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.auth import ClientCredentialsAuth, StaticTokenAuth
from backend_client.client import SmartEMAPIClient
from backend_client.errors import (
    AmqpPublishError,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
    RequestRejectedError,
    ServerError,
    SessionError,
)
from backend_client.models import (
    AckResult,
    AgentInstructionAcknowledgement,
    AgentInstructionAcknowledgementResponse,
    AgentLogEntry,
    ConnectionEvent,
    ErrorEvent,
    HeartbeatEvent,
    InstructionEvent,
    StreamEvent,
)
from backend_client.retry import RetryDetails, RetryPolicy, is_retryable
from backend_client.sse import AgentHeartbeatSender, SSEAgentClient, classify_ack_failure

__all__ = [
    "AckResult",
    "AgentHeartbeatSender",
    "AgentInstructionAcknowledgement",
    "AgentInstructionAcknowledgementResponse",
    "AgentLogEntry",
    "AmqpEventPublisher",
    "AmqpPublishError",
    "AmqpPublisherConfig",
    "AsyncSmartEMAPIClient",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailableError",
    "ClientCredentialsAuth",
    "ConflictError",
    "ConnectionEvent",
    "ErrorEvent",
    "HeartbeatEvent",
    "InstructionEvent",
    "InvalidResponseError",
    "NotFoundError",
    "RequestRejectedError",
    "RetryDetails",
    "RetryPolicy",
    "SSEAgentClient",
    "ServerError",
    "SessionError",
    "SmartEMAPIClient",
    "StaticTokenAuth",
    "StreamEvent",
    "canonical_json",
    "classify_ack_failure",
    "is_already_acknowledged",
    "is_retryable",
    "message_id_for",
]
