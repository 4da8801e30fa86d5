"""AmqpEventPublisher against a real RabbitMQ: 10,000 pipelined confirmed messages while the broker restarts
once, unroutable and nacked messages, concurrent publishers, heartbeats under sustained publishing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from backend_client import (
    AmqpEventPublisher,
    AmqpPublisherConfig,
    AmqpPublishError,
    canonical_json,
    message_id_for,
)
from tests.conftest import import_optional, skip_or_fail

pika = import_optional("pika", "EM_AGENT_REQUIRE_AMQP")

pytestmark = [pytest.mark.integration, pytest.mark.amqp]

TOTAL = 10_000


def _event(n: int) -> dict[str, object]:
    return {"event_type": "micrograph.created", "uuid": f"mic-{n}", "n": n}


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _drain(url: str, queue: str, expected: int, timeout: float) -> list[str]:
    """Consume ``queue`` until ``expected`` messages arrived and it stays empty (or ``timeout``), then
    delete it; returns the message ids in arrival order."""
    received: list[str] = []
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        deadline = time.monotonic() + timeout
        for _method, properties, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.5):
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


class _TcpProxy:
    """Loopback TCP relay to the broker whose connections the test can cut abruptly (no AMQP close)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every relayed connection at once, as a failing network would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    """A fresh queue name; the queue is deleted afterwards if a test left it behind."""
    name = f"em-agent-test-{uuid.uuid4().hex[:8]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ten_thousand_confirmed_messages_survive_a_broker_restart(amqp_url: str, queue_name: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        skip_or_fail("EM_AGENT_REQUIRE_AMQP", "rabbitmqctl not installed: cannot restart the broker")
    config = AmqpPublisherConfig(
        url=amqp_url, exchange="em_agent.test", queue=queue_name, confirm_timeout_s=60.0, reconnect_max_s=0.5
    )
    confirmed: list[str] = []
    failed = 0
    stopped = threading.Event()
    restarted = threading.Event()

    def restart_broker() -> None:
        _rabbitmqctl("stop_app")
        stopped.set()
        time.sleep(0.5)
        _rabbitmqctl("start_app")
        restarted.set()

    restarter = threading.Thread(target=restart_broker)
    longest_batch = 0.0
    started = time.monotonic()
    with AmqpEventPublisher(config) as publisher:
        assert publisher.wait_connected(10)
        n = 0
        while n < TOTAL:
            if n >= TOTAL // 3 and not restarter.is_alive() and not restarted.is_set():
                restarter.start()
            size = 500
            if restarter.is_alive() and not stopped.is_set():
                # Trickle while the broker is being stopped, so batches are in flight when it goes away.
                size = 20
                time.sleep(0.005)
                if n >= 2 * TOTAL // 3:
                    stopped.wait(60)
            batch = range(n, min(n + size, TOTAL))
            batch_started = time.monotonic()
            try:
                confirmed.extend(publisher.publish_many([("micrograph.created", _event(i)) for i in batch]))
            except AmqpPublishError:
                failed += len(batch)  # none of the batch counts as confirmed
            longest_batch = max(longest_batch, time.monotonic() - batch_started)
            n = batch.stop
        restarter.join(60)
        assert restarted.is_set()
        reconnects = publisher.reconnects
        assert publisher.published >= len(confirmed)
    elapsed = time.monotonic() - started
    _rabbitmqctl("await_startup")
    received = _drain(amqp_url, queue_name, len(confirmed), timeout=30)
    missing = set(confirmed) - set(received)
    assert not missing, f"{len(missing)} confirmed messages never arrived"
    published = {message_id_for("micrograph.created", canonical_json(_event(n))) for n in range(TOTAL)}
    assert set(received) <= published  # duplicates of republished messages are allowed (at least once)
    assert len(set(confirmed)) == len(confirmed) == TOTAL - failed
    assert failed <= TOTAL * 0.01, f"{failed} publishes failed"
    assert reconnects >= 1
    assert longest_batch > 0.5, "no batch was in flight across the broker outage"
    assert elapsed < 30, f"10,000 messages and a broker restart took {elapsed:.1f} s"


def test_messages_in_flight_when_the_connection_drops_are_republished(amqp_url: str, queue_name: str) -> None:
    proxy = _TcpProxy(("127.0.0.1", 5672))
    url = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    assert url != amqp_url
    config = AmqpPublisherConfig(url=url, exchange="em_agent.test", queue=queue_name, reconnect_max_s=0.2)
    confirmed: list[str] = []
    errors: list[BaseException] = []
    try:
        with AmqpEventPublisher(config) as publisher:
            assert publisher.wait_connected(10)

            def publish() -> None:
                try:
                    for start in range(0, 6000, 1000):
                        confirmed.extend(
                            publisher.publish_many(
                                [("grid.created", {"n": n}) for n in range(start, start + 1000)]
                            )
                        )
                except BaseException as exc:
                    errors.append(exc)

            publisher_thread = threading.Thread(target=publish)
            publisher_thread.start()
            deadline = time.monotonic() + 10
            while publisher.in_flight < 100 and time.monotonic() < deadline:
                time.sleep(0.001)
            proxy.cut()  # no Connection.Close, no last acks: the published window is simply lost
            publisher_thread.join(60)
            assert not errors
            assert publisher.reconnects >= 1
            assert publisher.republished > 0
    finally:
        proxy.close()
    assert len(confirmed) == 6000
    received = _drain(amqp_url, queue_name, 6000, timeout=10)
    assert set(received) == set(confirmed)  # every confirmed message arrived (some maybe twice)


def test_message_ids_are_deterministic_and_publish_needs_an_open_publisher(
    amqp_url: str, queue_name: str
) -> None:
    config = AmqpPublisherConfig(url=amqp_url, exchange="em_agent.test", queue=queue_name)
    publisher = AmqpEventPublisher(config)
    with pytest.raises(AmqpPublishError, match="not open"):
        publisher.publish("x", {"a": 1})
    with publisher:
        first = publisher.publish("grid.created", {"uuid": "g", "b": 2, "a": 1})
        again = publisher.publish("grid.created", {"a": 1, "uuid": "g", "b": 2})
        other = publisher.publish("grid.updated", {"uuid": "g", "b": 2, "a": 1})
    assert first == again != other
    assert _drain(amqp_url, queue_name, 3, timeout=5) == [first, again, other]


def test_unroutable_mandatory_messages_are_errors_never_confirmed(amqp_url: str, queue_name: str) -> None:
    # Only grid.* is bound: nowhere.* matches no queue, so the broker returns those messages (Basic.Return)
    # and then acks them; the publisher must report the return, not the ack.
    config = AmqpPublisherConfig(
        url=amqp_url,
        exchange=f"em_agent.test.{uuid.uuid4().hex[:6]}",
        queue=queue_name,
        queue_binding="grid.#",
    )
    with AmqpEventPublisher(config) as publisher:
        with pytest.raises(AmqpPublishError, match="unroutable"):
            publisher.publish("nowhere.created", {"uuid": "g"})
        # interleaved in one pipelined window: each outcome belongs to its own message
        futures = [
            publisher.submit("grid.created" if n % 2 == 0 else "nowhere.created", {"n": n})
            for n in range(400)
        ]
        routed: list[str] = []
        for n, future in enumerate(futures):
            if n % 2 == 0:
                routed.append(future.result(timeout=30))
            else:
                with pytest.raises(AmqpPublishError, match=r"unroutable \('nowhere.created': 312 NO_ROUTE\)"):
                    future.result(timeout=30)
        with pytest.raises(AmqpPublishError, match="1 of 3 messages not confirmed"):
            publisher.publish_many([("grid.a", {"n": 1}), ("nowhere.b", {"n": 2}), ("grid.c", {"n": 3})])
        assert publisher.published == len(routed) + 2
    received = _drain(amqp_url, queue_name, len(routed) + 2, timeout=10)
    assert set(routed) <= set(received)
    assert len(received) == len(routed) + 2  # no returned message reached the queue


def test_nacked_messages_are_republished_then_reported(amqp_url: str, queue_name: str) -> None:
    exchange = f"em_agent.test.{uuid.uuid4().hex[:6]}"
    # A queue that holds one message and rejects further publishes: the broker nacks them.
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(
            queue_name, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        channel.queue_bind(queue_name, exchange, routing_key="#")
    finally:
        connection.close()
    config = AmqpPublisherConfig(url=amqp_url, exchange=exchange, nack_retries=1)
    with AmqpEventPublisher(config) as publisher:
        kept = publisher.publish("grid.created", {"n": 1})
        with pytest.raises(AmqpPublishError, match="nacked"):
            publisher.publish("grid.created", {"n": 2})
        assert publisher.published == 1
    assert _drain(amqp_url, queue_name, 1, timeout=5) == [kept]


def test_concurrent_threads_and_coroutines_publish_through_one_connection(
    amqp_url: str, queue_name: str
) -> None:
    config = AmqpPublisherConfig(url=amqp_url, exchange="em_agent.test", queue=queue_name, max_in_flight=64)
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def single(name: str) -> None:
        try:
            results[name] = [publisher.publish("grid.created", {"who": name, "n": n}) for n in range(100)]
        except BaseException as exc:
            errors.append(exc)

    def batched(name: str) -> None:
        try:
            results[name] = publisher.publish_many(
                [("foilhole.created", {"who": name, "n": n}) for n in range(700)]
            )
        except BaseException as exc:
            errors.append(exc)

    async def coroutines() -> list[str]:
        singles = await asyncio.gather(
            *(publisher.publish_async("micrograph.created", {"who": "async", "n": n}) for n in range(50))
        )
        many = await publisher.publish_many_async(
            [("atlas.created", {"who": "async", "n": n}) for n in range(300)]
        )
        return [*singles, *many]

    with AmqpEventPublisher(config) as publisher:
        threads = [threading.Thread(target=single, args=(f"s{i}",)) for i in range(3)]
        threads += [threading.Thread(target=batched, args=(f"b{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        results["async"] = asyncio.run(coroutines())
        for thread in threads:
            thread.join(60)
        assert not errors
        assert publisher.connected
        assert publisher.in_flight == 0
    expected = [message_id for ids in results.values() for message_id in ids]
    assert len(expected) == len(set(expected)) == 3 * 100 + 3 * 700 + 50 + 300
    received = _drain(amqp_url, queue_name, len(expected), timeout=10)
    assert sorted(received) == sorted(expected)


@pytest.mark.slow
def test_heartbeats_are_serviced_under_sustained_publishing(amqp_url: str, queue_name: str) -> None:
    # A 1 s heartbeat: a connection whose owner stops servicing it while busy is closed within ~2-3 s.
    config = AmqpPublisherConfig(url=amqp_url, exchange="em_agent.test", queue=queue_name, heartbeat_s=1)
    count = 0
    with AmqpEventPublisher(config) as publisher:
        assert publisher.wait_connected(10)
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            count += len(publisher.publish_many([("grid.created", {"n": count + n}) for n in range(500)]))
        assert publisher.connected
        assert publisher.reconnects == 0
        assert publisher.last_error is None
    assert count > 0
