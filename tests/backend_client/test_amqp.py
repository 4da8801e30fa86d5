"""AMQP publisher pieces that need no broker: deterministic ids, canonical JSON, lifecycle errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from backend_client import (
    AmqpEventPublisher,
    AmqpPublisherConfig,
    AmqpPublishError,
    canonical_json,
    message_id_for,
)


class Event(BaseModel):
    uuid: str
    n: int


def test_canonical_json_is_key_order_independent_and_accepts_models() -> None:
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1}) == b'{"a":2,"b":1}'
    assert canonical_json(Event(uuid="u", n=1)) == b'{"n":1,"uuid":"u"}'


def test_message_id_depends_on_routing_key_and_body_only() -> None:
    body = canonical_json({"uuid": "g"})
    assert message_id_for("grid.created", body) == message_id_for("grid.created", body)
    assert message_id_for("grid.created", body) != message_id_for("grid.updated", body)
    assert message_id_for("grid.created", body) != message_id_for(
        "grid.created", canonical_json({"uuid": "h"})
    )


def test_publish_before_open_and_double_open_are_errors() -> None:
    # an unreachable port: the I/O thread keeps retrying, publish() times out without a confirm
    publisher = AmqpEventPublisher(
        AmqpPublisherConfig(
            url="amqp://guest:guest@127.0.0.1:1/%2F", connect_timeout_s=0.2, reconnect_max_s=0.1
        )
    )
    with pytest.raises(AmqpPublishError, match="not open"):
        publisher.publish("x", {})
    publisher.open()
    try:
        with pytest.raises(RuntimeError, match="already open"):
            publisher.open()
        with pytest.raises(AmqpPublishError, match="not confirmed"):
            publisher.publish("grid.created", {"uuid": "g"}, timeout=0.3)
        assert not publisher.connected
        assert publisher.last_error is not None
        assert "connect" in publisher.last_error
    finally:
        publisher.close(timeout=2)
