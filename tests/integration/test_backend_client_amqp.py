"""AmqpEventPublisher against a real RabbitMQ: 10,000 confirmed messages while the broker restarts once."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import pytest

from backend_client import (
    AmqpEventPublisher,
    AmqpPublisherConfig,
    AmqpPublishError,
    canonical_json,
    message_id_for,
)

pika = pytest.importorskip("pika")

pytestmark = [pytest.mark.integration, pytest.mark.amqp, pytest.mark.slow]

TOTAL = 10_000


def _event(n: int) -> dict[str, object]:
    return {"event_type": "micrograph.created", "uuid": f"mic-{n}", "n": n}


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _drain(url: str, queue: str, expected: int, timeout: float) -> list[str]:
    received: list[str] = []
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        deadline = time.monotonic() + timeout
        for _method, properties, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=2.0):
            if properties is None:  # inactivity: the queue is empty
                if len(received) >= expected or time.monotonic() > deadline:
                    break
                continue
            received.append(properties.message_id)
        channel.cancel()
        channel.queue_delete(queue)
    finally:
        connection.close()
    return received


@pytest.mark.timeout(180)
def test_ten_thousand_confirmed_messages_survive_a_broker_restart(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not installed: cannot restart the broker")
    queue = f"em-agent-test-{uuid.uuid4().hex[:8]}"
    config = AmqpPublisherConfig(
        url=amqp_url, exchange="em_agent.test", queue=queue, confirm_timeout_s=60.0, reconnect_max_s=1.0
    )
    confirmed: list[str] = []
    failed: list[str] = []
    restarted = threading.Event()

    def restart_broker() -> None:
        _rabbitmqctl("stop_app")
        time.sleep(0.5)
        _rabbitmqctl("start_app")
        restarted.set()

    restarter = threading.Thread(target=restart_broker)
    started = time.monotonic()
    with AmqpEventPublisher(config) as publisher:
        assert publisher.wait_connected(10)
        for n in range(TOTAL):
            if n == TOTAL // 3:
                restarter.start()
            try:
                confirmed.append(publisher.publish("micrograph.created", _event(n)))
            except AmqpPublishError:
                failed.append(f"mic-{n}")
        restarter.join(60)
        assert restarted.is_set()
        reconnects = publisher.reconnects
    elapsed = time.monotonic() - started
    _rabbitmqctl("await_startup")
    received = _drain(amqp_url, queue, len(confirmed), timeout=30)
    missing = set(confirmed) - set(received)
    assert not missing, f"{len(missing)} confirmed messages never arrived"
    published = {message_id_for("micrograph.created", canonical_json(_event(n))) for n in range(TOTAL)}
    assert set(received) <= published  # duplicates of republished messages are allowed (at least once)
    assert len(set(confirmed)) == TOTAL - len(failed)
    assert len(confirmed) >= TOTAL * 0.99, f"{len(failed)} publishes failed"
    assert reconnects >= 1
    assert elapsed < 90


def test_message_ids_are_deterministic_and_publish_needs_an_open_publisher(amqp_url: str) -> None:
    queue = f"em-agent-test-{uuid.uuid4().hex[:8]}"
    config = AmqpPublisherConfig(url=amqp_url, exchange="em_agent.test", queue=queue)
    publisher = AmqpEventPublisher(config)
    with pytest.raises(AmqpPublishError, match="not open"):
        publisher.publish("x", {"a": 1})
    with publisher:
        first = publisher.publish("grid.created", {"uuid": "g", "b": 2, "a": 1})
        again = publisher.publish("grid.created", {"a": 1, "uuid": "g", "b": 2})
        other = publisher.publish("grid.updated", {"uuid": "g", "b": 2, "a": 1})
    assert first == again != other
    assert _drain(amqp_url, queue, 3, timeout=5) == [first, again, other]


def test_unroutable_message_is_an_error_not_a_silent_drop(amqp_url: str) -> None:
    config = AmqpPublisherConfig(url=amqp_url, exchange=f"em_agent.empty.{uuid.uuid4().hex[:6]}")
    with AmqpEventPublisher(config) as publisher, pytest.raises(AmqpPublishError, match="unroutable"):
        publisher.publish("grid.created", {"uuid": "g"})
