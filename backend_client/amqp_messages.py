"""The message side of :mod:`backend_client.amqp`: the publisher's settings, the canonical body and deterministic
message id of an event, and the bookkeeping of messages between submission and the broker's confirm (pure: no
I/O, no pika).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

#: Namespace of deterministic message ids.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d3c55-2b8e-4c1a-9a57-4e7b0f6a9d21")

EventBody = Mapping[str, Any] | BaseModel | bytes


class AmqpPublisherConfig(BaseModel):
    """Settings of :class:`AmqpEventPublisher` (defaults suit a local RabbitMQ)."""

    url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/%2F", description="AMQP URL of the broker")
    exchange: str = Field(default="em_agent.events", description="durable topic exchange to publish to")
    queue: str | None = Field(
        default=None,
        description="if set, a durable queue bound to the exchange (messages kept without consumers)",
    )
    queue_binding: str = Field(default="#", description="binding key of `queue`")
    mandatory: bool = Field(
        default=True, description="unroutable messages are errors rather than silently dropped"
    )
    heartbeat_s: int = Field(default=60, ge=0, description="AMQP heartbeat negotiated with the broker, s")
    confirm_timeout_s: float = Field(default=30.0, gt=0, description="default wait for a broker confirm, s")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="socket connect timeout, s")
    reconnect_initial_s: float = Field(default=0.2, ge=0, description="first reconnect delay, s")
    reconnect_max_s: float = Field(default=10.0, gt=0, description="cap of one reconnect delay, s")
    max_in_flight: int = Field(
        default=1000, ge=1, description="messages published but not yet confirmed (the pipelining window)"
    )
    max_pending: int = Field(
        default=10_000,
        ge=1,
        description="unresolved messages (queued + in flight); callers beyond it block until their timeout",
    )
    nack_retries: int = Field(
        default=2, ge=0, description="republications of a message the broker nacked before it is an error"
    )
    app_id: str = Field(default="em-agent", description="`app_id` property of every message")


def canonical_json(body: Mapping[str, Any] | BaseModel) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) of a mapping or pydantic model."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def message_id_for(routing_key: str, body: bytes) -> str:
    """Deterministic message id: the same event published twice gets the same id (consumers dedupe)."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, routing_key + "\n" + body.decode("utf-8", errors="replace")))


@dataclass(eq=False)
class Outgoing:
    """One message from submission until its future is resolved and its backlog slot released."""

    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] | None
    deadline: float
    future: concurrent.futures.Future[str] = field(default_factory=concurrent.futures.Future)
    #: reply of a Basic.Return for the current publication (the broker acks a returned message afterwards)
    returned: str | None = None
    nacks: int = 0


def resolve(item: Outgoing, error: BaseException | None = None) -> None:
    """Settle ``item``'s future once; later outcomes (a confirm after a timeout, a cancel) are ignored."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is None:
            item.future.set_result(item.message_id)
        else:
            item.future.set_exception(error)


class ConfirmTracker:
    """Delivery tag -> message for one channel in confirm mode (pure bookkeeping, no I/O).

    RabbitMQ numbers the messages published on a channel after ``Confirm.Select`` from 1 and confirms them
    with ``Basic.Ack``/``Basic.Nack``, where ``multiple`` settles every tag up to and including the given one.
    A mandatory message that matches no queue is returned (``Basic.Return``) *before* its ack, so a return
    marks the oldest matching unsettled message and the later ack turns into an error.
    """

    def __init__(self) -> None:
        self._by_tag: collections.OrderedDict[int, Outgoing] = collections.OrderedDict()
        self._next_tag = 1

    def __len__(self) -> int:
        return len(self._by_tag)

    def sent(self, item: Outgoing) -> int:
        """Record ``item`` as the next publication on the channel; returns its delivery tag."""
        tag = self._next_tag
        self._next_tag += 1
        item.returned = None
        self._by_tag[tag] = item
        return tag

    def settle(self, delivery_tag: int, multiple: bool) -> list[Outgoing]:
        """Remove and return the messages a confirm settles, oldest first (unknown tags are ignored)."""
        if not multiple:
            item = self._by_tag.pop(delivery_tag, None)
            return [] if item is None else [item]
        settled: list[Outgoing] = []
        while self._by_tag:
            tag = next(iter(self._by_tag))
            if tag > delivery_tag:
                break
            settled.append(self._by_tag.pop(tag))
        return settled

    def mark_returned(self, message_id: str | None, routing_key: str, reply: str) -> Outgoing | None:
        """Mark the oldest unsettled, not yet returned message with this id and routing key as returned."""
        for item in self._by_tag.values():
            if item.returned is None and item.message_id == message_id and item.routing_key == routing_key:
                item.returned = reply
                return item
        return None

    def items(self) -> list[Outgoing]:
        """The unsettled messages in publication order."""
        return list(self._by_tag.values())

    def reset(self) -> list[Outgoing]:
        """Forget the channel (it is gone): returns its unsettled messages in publication order."""
        items = list(self._by_tag.values())
        self._by_tag.clear()
        self._next_tag = 1
        return items
