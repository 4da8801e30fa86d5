"""AMQP publisher pieces that need no broker: deterministic ids, canonical JSON, confirm bookkeeping,
deadlines, backpressure and lifecycle errors (against an unreachable port)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from backend_client import (
    AmqpEventPublisher,
    AmqpPublisherConfig,
    AmqpPublishError,
    canonical_json,
    message_id_for,
)
from backend_client.amqp_messages import ConfirmTracker, Outgoing

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


class Event(BaseModel):
    uuid: str
    n: int


def _item(n: int, routing_key: str = "grid.created") -> Outgoing:
    body = canonical_json({"n": n})
    return Outgoing(routing_key, body, message_id_for(routing_key, body), None, time.monotonic() + 60)


@pytest.fixture
def offline() -> Iterator[AmqpEventPublisher]:
    """A publisher whose broker never answers: its I/O thread keeps retrying the connection."""
    publisher = AmqpEventPublisher(
        AmqpPublisherConfig(url=UNREACHABLE, connect_timeout_s=0.2, reconnect_max_s=0.1, max_pending=4)
    )
    publisher.open()
    try:
        yield publisher
    finally:
        publisher.close(timeout=1)


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


def test_tracker_numbers_publications_and_settles_single_and_multiple_confirms() -> None:
    tracker = ConfirmTracker()
    items = [_item(n) for n in range(6)]
    assert [tracker.sent(item) for item in items] == [1, 2, 3, 4, 5, 6]
    assert tracker.settle(2, multiple=False) == [items[1]]
    assert tracker.settle(2, multiple=False) == []  # a tag settles once
    assert tracker.settle(4, multiple=True) == [items[0], items[2], items[3]]
    assert tracker.settle(99, multiple=False) == []
    assert len(tracker) == 2
    assert tracker.settle(6, multiple=True) == [items[4], items[5]]
    assert len(tracker) == 0


def test_tracker_reset_returns_unconfirmed_in_order_and_restarts_tags() -> None:
    tracker = ConfirmTracker()
    items = [_item(n) for n in range(4)]
    for item in items:
        tracker.sent(item)
    tracker.settle(1, multiple=False)
    assert tracker.reset() == items[1:]
    assert len(tracker) == 0
    assert tracker.sent(items[1]) == 1  # the next channel numbers from 1 again


def test_tracker_return_marks_the_oldest_matching_unreturned_message() -> None:
    tracker = ConfirmTracker()
    twin_a, twin_b = _item(1, "nowhere.x"), _item(1, "nowhere.x")  # same event published twice
    other = _item(1, "grid.created")
    for item in (other, twin_a, twin_b):
        tracker.sent(item)
    # the id matches `other` only if the routing key does too
    assert tracker.mark_returned(other.message_id, "nowhere.x", "312 NO_ROUTE") is None
    assert tracker.mark_returned(twin_a.message_id, "nowhere.x", "312 NO_ROUTE") is twin_a
    assert tracker.mark_returned(twin_a.message_id, "nowhere.x", "312 NO_ROUTE") is twin_b
    assert tracker.mark_returned(twin_a.message_id, "nowhere.x", "312 NO_ROUTE") is None
    assert other.returned is None
    assert twin_a.returned == "312 NO_ROUTE"
    tracker.reset()
    tracker.sent(twin_a)  # republished: the old return no longer applies
    assert twin_a.returned is None


def test_publish_before_open_and_double_open_are_errors(offline: AmqpEventPublisher) -> None:
    closed = AmqpEventPublisher(AmqpPublisherConfig(url=UNREACHABLE))
    with pytest.raises(AmqpPublishError, match="not open"):
        closed.publish("x", {})
    with pytest.raises(AmqpPublishError, match="not open"):
        closed.publish_many([("x", {})])
    with pytest.raises(RuntimeError, match="already open"):
        offline.open()


def test_publish_times_out_without_a_broker(offline: AmqpEventPublisher) -> None:
    started = time.monotonic()
    with pytest.raises(AmqpPublishError, match="not confirmed in time"):
        offline.publish("grid.created", {"uuid": "g"}, timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert not offline.connected
    assert offline.last_error is not None
    assert "connect" in offline.last_error
    assert "guest" not in offline.last_error


def test_submitted_future_resolves_by_its_deadline_without_a_waiting_caller(
    offline: AmqpEventPublisher,
) -> None:
    future = offline.submit("grid.created", {"uuid": "g"}, timeout=0.2)
    with pytest.raises(AmqpPublishError, match="not confirmed in time"):
        future.result(timeout=2)


def test_backlog_full_applies_backpressure_then_fails(offline: AmqpEventPublisher) -> None:
    # max_pending=4: the fifth message waits for a slot until the batch deadline, then fails
    with pytest.raises(AmqpPublishError, match="5 of 5 messages not confirmed") as info:
        offline.publish_many([("grid.created", {"n": n}) for n in range(5)], timeout=0.3)
    assert isinstance(info.value.__cause__, AmqpPublishError)
    # the slots of expired messages are released: the publisher accepts work again
    with pytest.raises(AmqpPublishError, match="not confirmed in time"):
        offline.publish("grid.created", {"n": 9}, timeout=0.2)


def test_cancelled_future_withdraws_the_message(offline: AmqpEventPublisher) -> None:
    future = offline.submit("grid.created", {"uuid": "g"}, timeout=30)
    assert future.cancel()
    # the withdrawn message is dropped and its slot freed: four more fit in the backlog of four
    futures = [offline.submit("grid.created", {"n": n}, timeout=5) for n in range(4)]
    time.sleep(0.5)  # one housekeeping pass
    assert all(not f.done() for f in futures)


def test_close_fails_unconfirmed_messages_and_later_publishes() -> None:
    publisher = AmqpEventPublisher(AmqpPublisherConfig(url=UNREACHABLE, reconnect_max_s=0.1))
    publisher.open()
    future = publisher.submit("grid.created", {"uuid": "g"}, timeout=30)
    started = time.monotonic()
    publisher.close(timeout=0.3)
    assert time.monotonic() - started < 3
    with pytest.raises(AmqpPublishError, match="closed before"):
        future.result(timeout=0)
    with pytest.raises(AmqpPublishError, match="not open"):
        publisher.submit("grid.created", {"uuid": "g"})
    publisher.close()  # idempotent


def test_routing_key_is_validated() -> None:
    publisher = AmqpEventPublisher(AmqpPublisherConfig(url=UNREACHABLE))
    with publisher, pytest.raises(ValueError, match="routing key"):
        publisher.publish("x" * 256, {})


async def test_async_publish_fails_cleanly_without_a_broker() -> None:
    publisher = AmqpEventPublisher(AmqpPublisherConfig(url=UNREACHABLE, reconnect_max_s=0.1))
    await publisher.start()
    try:
        with pytest.raises(AmqpPublishError, match="not confirmed in time"):
            await publisher.publish_async("grid.created", {"uuid": "g"}, confirm_timeout_s=0.2)
        with pytest.raises(AmqpPublishError, match="2 of 2"):
            await publisher.publish_many_async([("a.b", {"n": 1}), ("a.b", {"n": 2})], confirm_timeout_s=0.2)
        # a cancelled task withdraws its message
        task = asyncio.create_task(publisher.publish_async("grid.created", {"uuid": "h"}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await publisher.stop(drain_s=0.5)


async def test_async_backpressure_waits_off_the_event_loop(offline: AmqpEventPublisher) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        # a backlog of four: two of the six messages wait for a slot (in a worker thread) until the deadline
        with pytest.raises(AmqpPublishError, match="6 of 6"):
            await offline.publish_many_async([("a.b", {"n": n}) for n in range(6)], confirm_timeout_s=0.4)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ticks >= 20


@pytest.mark.parametrize("url", ["http://broker/", "amqp://user:secret@host:notaport/", "garbage"])
def test_open_rejects_an_unusable_url_without_echoing_it(url: str) -> None:
    publisher = AmqpEventPublisher(AmqpPublisherConfig(url=url))
    with pytest.raises(ValueError, match="AMQP URL") as info:
        publisher.open()
    assert "secret" not in str(info.value)
    assert not publisher.connected


def test_close_while_the_handshake_hangs_closes_the_socket() -> None:
    # A server that accepts TCP and never speaks AMQP keeps pika's connection "opening". Closing then aborts the
    # attempt, which pika finishes on the I/O loop; stopping the loop before that left the socket unclosed (a
    # ResourceWarning at garbage collection, as CI saw under load).
    import gc
    import socket
    import warnings

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    try:
        port = server.getsockname()[1]
        publisher = AmqpEventPublisher(
            AmqpPublisherConfig(url=f"amqp://guest:guest@127.0.0.1:{port}/%2F", connect_timeout_s=5.0)
        )
        publisher.open()
        server.settimeout(5)
        accepted.append(server.accept()[0])
        with pytest.raises(AmqpPublishError, match="not confirmed in time"):
            publisher.publish("grid.created", {"uuid": "g"}, timeout=0.2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            publisher.close(timeout=0.1)
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
        # the client side really closed: after pika's protocol header the server reads end-of-stream
        accepted[0].settimeout(5)
        while chunk := accepted[0].recv(1024):
            assert chunk.startswith(b"AMQP")
    finally:
        for sock in accepted:
            sock.close()
        server.close()
