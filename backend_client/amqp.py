"""``AmqpEventPublisher``: entity events to a RabbitMQ topic exchange, at least once (optional extra
``amqp``).

Guarantees:

* durable topic exchange (and optionally a durable queue bound to it), persistent JSON messages with
  ``content_type=application/json`` and a deterministic ``message_id`` (UUIDv5 of routing key and canonical
  body, unless the caller gives one), so consumers can deduplicate redeliveries;
* publisher confirms: :meth:`AmqpEventPublisher.publish` returns only after the broker confirmed the message,
and
  raises :class:`~backend_client.errors.AmqpPublishError` if it was nacked, unroutable (``mandatory``) or not
  confirmed in time; a message in flight when the connection drops is republished after the reconnect (same
  ``message_id``);
* reconnects with exponential backoff and full jitter;
* heartbeats are serviced under sustained publishing: pika's ``BlockingConnection`` is not thread-safe and
only
  services heartbeats when its owner calls into it (SmartEM lost its broker connection exactly there), so the
  connection lives on ONE dedicated thread that does all I/O; ``publish()`` hands messages to it through a
  queue and waits for the confirm.

pika is imported lazily, so ``backend_client`` works without the extra.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from backend_client.errors import AmqpPublishError
from backend_client.retry import backoff_delay

#: Namespace of deterministic message ids.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d3c55-2b8e-4c1a-9a57-4e7b0f6a9d21")


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
    max_pending: int = Field(default=10_000, ge=1, description="messages waiting for the I/O thread")
    app_id: str = Field(default="em-agent", description="`app_id` property of every message")


def canonical_json(body: Mapping[str, Any] | BaseModel) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) of a mapping or pydantic model."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def message_id_for(routing_key: str, body: bytes) -> str:
    """Deterministic message id: the same event published twice gets the same id (consumers dedupe)."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, routing_key + "\n" + body.decode("utf-8", errors="replace")))


@dataclass
class _Outgoing:
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] | None
    deadline: float
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class AmqpEventPublisher:
    """Publishes JSON events with confirms from one dedicated I/O thread.

    Use :meth:`open`/:meth:`close` (or ``async`` :meth:`start`/:meth:`stop`, or a ``with`` block). Messages
    may be published before the broker is reachable: they wait (up to their timeout) for the connection.
    """

    def __init__(
        self, config: AmqpPublisherConfig | None = None, *, logger: logging.Logger | None = None
    ) -> None:
        self.config = config or AmqpPublisherConfig()
        self._log = logger or logging.getLogger("backend_client.amqp")
        self._queue: queue.Queue[_Outgoing] = queue.Queue(maxsize=self.config.max_pending)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._rng = random.Random()
        self._current: _Outgoing | None = None  # the message being published (owned by the I/O thread)
        self.published = 0
        self.reconnects = 0
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the I/O thread holds an open channel."""
        return self._connected.is_set()

    def open(self) -> None:
        """Start the I/O thread (raises if already open, or if pika is not installed)."""
        if self._thread is not None:
            raise RuntimeError("AmqpEventPublisher already open")
        _pika()  # fail early with a clear message when the extra is missing
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name="em-agent-amqp", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the first connection is up; False on timeout."""
        return self._connected.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued (bounded by ``timeout``), then close the connection and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._closing.set()
        thread.join(timeout)
        # Whatever is still queued will never be published: tell the waiting callers.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not item.future.done():
                item.future.set_exception(
                    AmqpPublishError("publisher closed before the message was confirmed")
                )

    async def start(self) -> None:
        """Async lifecycle: :meth:`open`."""
        self.open()

    async def stop(self, drain_s: float = 10.0) -> None:
        """Async lifecycle: :meth:`close` (bounded by ``drain_s``) in a worker thread."""
        await asyncio.to_thread(self.close, drain_s)

    def __enter__(self) -> AmqpEventPublisher:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------------------------------

    def _submit(
        self,
        routing_key: str,
        event: Mapping[str, Any] | BaseModel | bytes,
        message_id: str | None,
        headers: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> _Outgoing:
        if self._thread is None or self._closing.is_set():
            raise AmqpPublishError("publisher is not open")
        body = event if isinstance(event, bytes) else canonical_json(event)
        wait = timeout if timeout is not None else self.config.confirm_timeout_s
        item = _Outgoing(
            routing_key=routing_key,
            body=body,
            message_id=message_id or message_id_for(routing_key, body),
            headers=dict(headers) if headers else None,
            deadline=time.monotonic() + wait,
        )
        try:
            self._queue.put(item, timeout=wait)
        except queue.Full:
            raise AmqpPublishError(f"publisher backlog full ({self.config.max_pending} messages)") from None
        return item

    def _outcome(self, item: _Outgoing, future_error: BaseException | None) -> str:
        if future_error is not None:
            raise future_error
        return item.message_id

    def publish(
        self,
        routing_key: str,
        event: Mapping[str, Any] | BaseModel | bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish one event and wait for the broker's confirm; returns the ``message_id``.

        Raises :class:`~backend_client.errors.AmqpPublishError` when the message was not confirmed (nacked,
        unroutable, timed out, publisher closed).
        """
        item = self._submit(routing_key, event, message_id, headers, timeout)
        # The I/O thread resolves every item by its deadline; the grace covers one confirm round trip.
        remaining = item.deadline - time.monotonic() + self.config.connect_timeout_s + 1.0
        try:
            item.future.result(timeout=max(0.0, remaining))
        except concurrent.futures.TimeoutError:
            raise AmqpPublishError(f"message {item.message_id} not confirmed in time") from None
        return item.message_id

    async def publish_async(
        self,
        routing_key: str,
        event: Mapping[str, Any] | BaseModel | bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        confirm_timeout_s: float | None = None,
    ) -> str:
        """Async twin of :meth:`publish` (the event loop is never blocked)."""
        return await asyncio.to_thread(
            self.publish,
            routing_key,
            event,
            message_id=message_id,
            headers=headers,
            timeout=confirm_timeout_s,
        )

    # -- the I/O thread --------------------------------------------------------------------------------------

    def _connect(self) -> tuple[Any, Any]:
        pika = _pika()
        params = pika.URLParameters(self.config.url)
        params.heartbeat = self.config.heartbeat_s
        params.blocked_connection_timeout = self.config.confirm_timeout_s
        params.socket_timeout = self.config.connect_timeout_s
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            channel.exchange_declare(self.config.exchange, exchange_type="topic", durable=True)
            if self.config.queue:
                channel.queue_declare(self.config.queue, durable=True)
                channel.queue_bind(
                    self.config.queue, self.config.exchange, routing_key=self.config.queue_binding
                )
            channel.confirm_delivery()
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        return connection, channel

    def _run(self) -> None:
        pika = _pika()
        failures = 0
        inflight: _Outgoing | None = None
        while not (self._closing.is_set() and inflight is None and self._queue.empty()):
            try:
                connection, channel = self._connect()
            except (pika.exceptions.AMQPError, OSError) as exc:
                failures += 1
                self.last_error = f"connect: {type(exc).__name__}: {exc}"
                self._log.warning(
                    "AMQP connect failed", extra={"event": "amqp.connect_failed", "failures": failures}
                )
                inflight = self._expire(inflight)
                if self._closing.is_set() and failures > 3:
                    break
                self._closing.wait(
                    backoff_delay(
                        failures, self.config.reconnect_initial_s, self.config.reconnect_max_s, rng=self._rng
                    )
                )
                continue
            if failures:
                self.reconnects += 1
            failures = 0
            self._connected.set()
            self._log.info(
                "AMQP connected", extra={"event": "amqp.connected", "exchange": self.config.exchange}
            )
            try:
                self._serve(connection, channel, inflight)
                inflight = None
            except (pika.exceptions.AMQPError, OSError) as exc:
                # The message being published when the connection died was not confirmed: publish it again
                # after the reconnect (same message_id, so a consumer that saw it can dedupe).
                inflight, self._current = self._current, None
                failures = 1
                self.last_error = f"connection lost: {type(exc).__name__}: {exc}"
                self._log.warning(
                    "AMQP connection lost", extra={"event": "amqp.disconnected", "error": str(exc)}
                )
            finally:
                self._connected.clear()
                with contextlib.suppress(Exception):
                    if connection.is_open:
                        connection.close()
            if failures:
                self._closing.wait(
                    backoff_delay(
                        failures, self.config.reconnect_initial_s, self.config.reconnect_max_s, rng=self._rng
                    )
                )
        self._expire(inflight, force=True)

    def _expire(self, item: _Outgoing | None, *, force: bool = False) -> _Outgoing | None:
        """Fail ``item`` if its deadline passed (or ``force``); returns the item still to publish, if any."""
        if item is None:
            return None
        if force or time.monotonic() >= item.deadline:
            if not item.future.done():
                item.future.set_exception(
                    AmqpPublishError(f"message {item.message_id} not confirmed in time")
                )
            return None
        return item

    def _serve(self, connection: Any, channel: Any, inflight: _Outgoing | None) -> None:
        """Publish until closing; raises pika errors on connection loss (``self._current`` holds the message
        that was being published)."""
        pika = _pika()
        item = inflight
        while True:
            if item is None:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    connection.process_data_events(time_limit=0)  # services heartbeats while idle
                    continue
            if self._expire(item) is None:
                item = None
                continue
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=item.message_id,
                app_id=self.config.app_id,
                type=item.routing_key,
                timestamp=int(time.time()),
                headers=item.headers,
            )
            self._current = item
            try:
                channel.basic_publish(
                    self.config.exchange,
                    item.routing_key,
                    item.body,
                    properties=properties,
                    mandatory=self.config.mandatory,
                )
            except pika.exceptions.UnroutableError:
                item.future.set_exception(
                    AmqpPublishError(f"message {item.message_id} is unroutable ({item.routing_key!r})")
                )
            except pika.exceptions.NackError:
                item.future.set_exception(
                    AmqpPublishError(f"message {item.message_id} was nacked by the broker")
                )
            else:
                self.published += 1
                item.future.set_result(None)
            self._current = None
            item = None


def _pika() -> Any:
    """Import pika on first use (optional extra ``amqp``)."""
    try:
        import pika
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise AmqpPublishError("the AMQP publisher needs pika: pip install 'em-agent[amqp]'") from exc
    return pika


__all__ = ["AmqpEventPublisher", "AmqpPublisherConfig", "canonical_json", "message_id_for"]
