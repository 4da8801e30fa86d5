"""``AmqpEventPublisher``: entity events to a RabbitMQ topic exchange, at least once (optional extra
``amqp``).

Guarantees:

* durable topic exchange (and optionally a durable queue bound to it), persistent JSON messages with
  ``content_type=application/json`` and a deterministic ``message_id`` (UUIDv5 of routing key and canonical
  body, unless the caller gives one), so consumers can deduplicate redeliveries;
* publisher confirms: :meth:`AmqpEventPublisher.publish` returns only after the broker confirmed the message
  (:meth:`~AmqpEventPublisher.publish_many` after all of its messages were confirmed) and raises
  :class:`~backend_client.errors.AmqpPublishError` if it was nacked, unroutable (``mandatory``: a Basic.Return
  is never reported as confirmed) or not confirmed in time;
* pipelining: up to ``max_in_flight`` messages are published before their confirms arrive (delivery tags are
  tracked per channel, ``multiple`` acks settle a whole prefix), so throughput is bounded by the broker, not
  by one confirm round trip per message; callers beyond ``max_pending`` unresolved messages block
  (backpressure) until their timeout;
* every message not yet confirmed when the connection drops is republished, in order, after the reconnect
  (same ``message_id``; delivery tags restart on the new channel), with exponential backoff and full jitter
  between connection attempts;
* heartbeats are serviced under sustained publishing.

Threading model (why ``SelectConnection``): pika connections are not thread-safe, and a ``BlockingConnection``
services heartbeats only while its owner calls into it; its ``confirm_delivery`` mode also waits for each
confirm inside ``basic_publish`` (one round trip per message). SmartEM lost its broker connection exactly
there. Here one dedicated thread runs a pika ``IOLoop`` that owns every connection (one at a time) and all
pika state; the loop never blocks on a confirm, so heartbeats, acks, returns and new publishes interleave
freely. Caller threads only append to a locked queue and wake the loop with ``add_callback_threadsafe`` (the
one thread-safe entry point of pika's ``IOLoop``); results come back through ``concurrent.futures.Future``.

pika is imported lazily, so ``backend_client`` works without the extra.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from backend_client.errors import AmqpPublishError
from backend_client.retry import backoff_delay

#: Namespace of deterministic message ids.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d3c55-2b8e-4c1a-9a57-4e7b0f6a9d21")

#: Period of the I/O thread's housekeeping (deadline expiry, bounded close), s.
_HOUSEKEEPING_S = 0.2
#: Extra wait of a blocked caller beyond its deadline: the I/O thread resolves every message by its deadline
#: within one housekeeping period; this only guards against a stuck I/O thread.
_CALLER_GRACE_S = 1.0
#: Messages moved from caller threads into the pending queue per lock acquisition and loop wake-up.
_SUBMIT_CHUNK = 256

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
class _Outgoing:
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


def _resolve(item: _Outgoing, error: BaseException | None = None) -> None:
    """Settle ``item``'s future once; later outcomes (a confirm after a timeout, a cancel) are ignored."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is None:
            item.future.set_result(item.message_id)
        else:
            item.future.set_exception(error)


class _ConfirmTracker:
    """Delivery tag -> message for one channel in confirm mode (pure bookkeeping, no I/O).

    RabbitMQ numbers the messages published on a channel after ``Confirm.Select`` from 1 and confirms them
    with ``Basic.Ack``/``Basic.Nack``, where ``multiple`` settles every tag up to and including the given one.
    A mandatory message that matches no queue is returned (``Basic.Return``) *before* its ack, so a return
    marks the oldest matching unsettled message and the later ack turns into an error.
    """

    def __init__(self) -> None:
        self._by_tag: collections.OrderedDict[int, _Outgoing] = collections.OrderedDict()
        self._next_tag = 1

    def __len__(self) -> int:
        return len(self._by_tag)

    def sent(self, item: _Outgoing) -> int:
        """Record ``item`` as the next publication on the channel; returns its delivery tag."""
        tag = self._next_tag
        self._next_tag += 1
        item.returned = None
        self._by_tag[tag] = item
        return tag

    def settle(self, delivery_tag: int, multiple: bool) -> list[_Outgoing]:
        """Remove and return the messages a confirm settles, oldest first (unknown tags are ignored)."""
        if not multiple:
            item = self._by_tag.pop(delivery_tag, None)
            return [] if item is None else [item]
        settled: list[_Outgoing] = []
        while self._by_tag:
            tag = next(iter(self._by_tag))
            if tag > delivery_tag:
                break
            settled.append(self._by_tag.pop(tag))
        return settled

    def mark_returned(self, message_id: str | None, routing_key: str, reply: str) -> _Outgoing | None:
        """Mark the oldest unsettled, not yet returned message with this id and routing key as returned."""
        for item in self._by_tag.values():
            if item.returned is None and item.message_id == message_id and item.routing_key == routing_key:
                item.returned = reply
                return item
        return None

    def items(self) -> list[_Outgoing]:
        """The unsettled messages in publication order."""
        return list(self._by_tag.values())

    def reset(self) -> list[_Outgoing]:
        """Forget the channel (it is gone): returns its unsettled messages in publication order."""
        items = list(self._by_tag.values())
        self._by_tag.clear()
        self._next_tag = 1
        return items


class AmqpEventPublisher:
    """Publishes JSON events with pipelined confirms from one dedicated I/O thread.

    Use :meth:`open`/:meth:`close` (or ``async`` :meth:`start`/:meth:`stop`, or a ``with`` block). Messages
    may be published before the broker is reachable: they wait (up to their timeout) for the connection.
    All publishing methods are safe to call from any number of threads.
    """

    def __init__(
        self, config: AmqpPublisherConfig | None = None, *, logger: logging.Logger | None = None
    ) -> None:
        self.config = config or AmqpPublisherConfig()
        self._log = logger or logging.getLogger("backend_client.amqp")
        self._rng = random.Random()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        # Shared between caller threads and the I/O thread (guarded by _lock).
        self._lock = threading.Lock()
        self._pending: collections.deque[_Outgoing] = collections.deque()
        self._accepting = False
        self._wake_scheduled = False
        # One slot per unresolved message: callers block here when max_pending is reached (backpressure).
        self._slots = threading.BoundedSemaphore(self.config.max_pending)
        # Owned by the I/O thread only.
        self._ioloop: Any = None
        self._connection: Any = None
        self._channel: Any = None
        self._generation = 0  # bumped per connection: callbacks of a dead channel are ignored
        self._tracker = _ConfirmTracker()
        self._ready = False  # channel open and in confirm mode
        self._ever_ready = False
        self._failures = 0
        self._reconnect_timer: Any = None
        self._stopping = False  # close() requested: drain, then finish
        self._finishing = False  # drained or out of time: close the connection and stop the loop
        self._close_deadline = 0.0
        #: messages confirmed by the broker
        self.published = 0
        #: successful reconnects after a lost or failed connection
        self.reconnects = 0
        #: messages queued again because their connection dropped before the broker confirmed them
        self.republished = 0
        #: description of the last connection problem (never contains credentials)
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the I/O thread holds an open channel in confirm mode."""
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        """Messages published and not yet confirmed (a snapshot, for monitoring)."""
        return len(self._tracker)

    def open(self) -> None:
        """Start the I/O thread (raises if already open, or if pika is not installed)."""
        if self._thread is not None:
            raise RuntimeError("AmqpEventPublisher already open")
        pika = _pika()  # fail early with a clear message when the extra is missing
        _check_url(pika, self.config.url)
        self._closing.clear()
        self._stopping = self._finishing = False
        self._failures = 0
        self._tracker = _ConfirmTracker()
        self._ioloop = pika.adapters.select_connection.IOLoop()
        self._slots = threading.BoundedSemaphore(self.config.max_pending)
        with self._lock:
            self._pending.clear()
            self._accepting = True
            self._wake_scheduled = False
        self._thread = threading.Thread(target=self._run, name="em-agent-amqp", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until a connection is up; False on timeout."""
        return self._connected.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued and wait for its confirms (bounded by ``timeout``), then close the
        connection and join the thread; messages still unconfirmed then fail with AmqpPublishError."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._closing.set()
        deadline = time.monotonic() + max(0.0, timeout)
        with contextlib.suppress(Exception):  # the loop may already have ended (it then failed the rest)
            self._ioloop.add_callback_threadsafe(functools.partial(self._on_close_requested, deadline))
        # The loop stops itself at the deadline; the margin covers the graceful AMQP close handshake.
        thread.join(max(0.0, timeout) + self.config.connect_timeout_s + 2.0)
        if thread.is_alive():  # pragma: no cover - only with a wedged pika loop
            self._log.error("AMQP I/O thread did not stop", extra={"event": "amqp.stop_timeout"})

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

    # -- publishing (any thread) -----------------------------------------------------------------------------

    def _make(
        self,
        routing_key: str,
        event: EventBody,
        message_id: str | None,
        headers: Mapping[str, Any] | None,
        deadline: float,
    ) -> _Outgoing:
        if not isinstance(routing_key, str) or len(routing_key.encode()) > 255:
            raise ValueError(f"routing key must be a string of at most 255 bytes, got {routing_key!r:.80}")
        body = event if isinstance(event, bytes) else canonical_json(event)
        return _Outgoing(
            routing_key=routing_key,
            body=body,
            message_id=message_id or message_id_for(routing_key, body),
            headers=dict(headers) if headers else None,
            deadline=deadline,
        )

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (timeout if timeout is not None else self.config.confirm_timeout_s)

    def _check_open(self) -> None:
        if self._thread is None or self._closing.is_set():
            raise AmqpPublishError("publisher is not open")

    def _enqueue(self, items: Sequence[_Outgoing]) -> None:
        """Hand items (each holding a slot) to the I/O thread; fails them if the publisher has shut down."""
        if not items:
            return
        with self._lock:
            accepting = self._accepting
            if accepting:
                self._pending.extend(items)
                wake = not self._wake_scheduled
                self._wake_scheduled = True
        if not accepting:
            for item in items:
                _resolve(item, AmqpPublishError("publisher closed before the message was confirmed"))
                self._slots.release()
            return
        if wake:
            self._ioloop.add_callback_threadsafe(self._on_wake)

    def _submit_all(self, items: Sequence[_Outgoing], *, block: bool = True) -> int:
        """Take a backlog slot for each item (blocking up to its deadline) and enqueue them in chunks.

        Items that get no slot in time fail with "backlog full". Returns how many items were handled: all of
        them, or with ``block=False`` those before the first one that would have to wait for a slot.
        """
        chunk: list[_Outgoing] = []
        for index, item in enumerate(items):
            if not self._slots.acquire(blocking=False):
                # Enqueue what this caller holds first: waiting while holding unqueued slots could deadlock.
                self._enqueue(chunk)
                chunk = []
                if not block:
                    return index
                wait = item.deadline - time.monotonic()
                if not (wait > 0 and self._slots.acquire(timeout=wait)):
                    _resolve(
                        item,
                        AmqpPublishError(f"publisher backlog full ({self.config.max_pending} messages)"),
                    )
                    continue
            chunk.append(item)
            if len(chunk) >= _SUBMIT_CHUNK:
                self._enqueue(chunk)
                chunk = []
        self._enqueue(chunk)
        return len(items)

    def submit(
        self,
        routing_key: str,
        event: EventBody,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[str]:
        """Queue one event without waiting for its confirm; the future resolves to the ``message_id`` once
        the broker confirmed it, or to :class:`~backend_client.errors.AmqpPublishError` (by ``timeout``).

        Blocks only while ``max_pending`` messages are unresolved (backpressure). Cancelling the future
        before the message was published withdraws it.
        """
        self._check_open()
        item = self._make(routing_key, event, message_id, headers, self._deadline(timeout))
        self._submit_all([item])
        return item.future

    def publish(
        self,
        routing_key: str,
        event: EventBody,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish one event and wait for the broker's confirm; returns the ``message_id``.

        Raises :class:`~backend_client.errors.AmqpPublishError` when the message was not confirmed (nacked,
        unroutable, timed out, publisher closed).
        """
        self._check_open()
        item = self._make(routing_key, event, message_id, headers, self._deadline(timeout))
        self._submit_all([item])
        return self._wait(item)

    def publish_many(
        self, messages: Iterable[tuple[str, EventBody]], *, timeout: float | None = None
    ) -> list[str]:
        """Publish ``(routing_key, event)`` pairs pipelined; returns their message ids (in order) once every
        one was confirmed.

        ``timeout`` bounds the whole batch. If any message fails, the others are still waited for, then
        :class:`~backend_client.errors.AmqpPublishError` says how many failed: republishing the whole batch
        is safe (deterministic message ids let consumers drop the duplicates).
        """
        self._check_open()
        deadline = self._deadline(timeout)
        items = [self._make(key, event, None, None, deadline) for key, event in messages]
        self._submit_all(items)
        outcomes: list[str | BaseException] = []
        for item in items:
            try:
                outcomes.append(self._wait(item))
            except AmqpPublishError as exc:
                outcomes.append(exc)
        return _collect(outcomes)

    def _wait(self, item: _Outgoing) -> str:
        remaining = item.deadline - time.monotonic() + _CALLER_GRACE_S
        try:
            return item.future.result(timeout=max(0.0, remaining))
        except concurrent.futures.TimeoutError:
            _resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
            return item.future.result(timeout=0)
        except concurrent.futures.CancelledError:
            raise AmqpPublishError(f"message {item.message_id} was withdrawn") from None

    async def publish_async(
        self,
        routing_key: str,
        event: EventBody,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        confirm_timeout_s: float | None = None,
    ) -> str:
        """Async twin of :meth:`publish` (``confirm_timeout_s`` is its ``timeout``): the event loop is never
        blocked and no thread waits for the confirm (cancelling the task withdraws a message not yet
        published)."""
        self._check_open()
        item = self._make(routing_key, event, message_id, headers, self._deadline(confirm_timeout_s))
        return (await self._publish_items_async([item]))[0]

    async def publish_many_async(
        self, messages: Iterable[tuple[str, EventBody]], *, confirm_timeout_s: float | None = None
    ) -> list[str]:
        """Async twin of :meth:`publish_many` (``confirm_timeout_s`` is its ``timeout``)."""
        self._check_open()
        deadline = self._deadline(confirm_timeout_s)
        return await self._publish_items_async(
            [self._make(key, event, None, None, deadline) for key, event in messages]
        )

    async def _publish_items_async(self, items: list[_Outgoing]) -> list[str]:
        submitted = self._submit_all(items, block=False)
        if submitted < len(items):  # backpressure: wait for slots in a worker thread, not on the event loop
            await asyncio.to_thread(self._submit_all, items[submitted:])
        futures = [asyncio.wrap_future(item.future) for item in items]
        if not futures:
            return []
        wait = max(0.0, max(item.deadline for item in items) - time.monotonic()) + _CALLER_GRACE_S
        await asyncio.wait(futures, timeout=wait)
        outcomes: list[str | BaseException] = []
        for item, fut in zip(items, futures, strict=True):
            if not fut.done():  # only with a stuck I/O thread: the deadline passed
                _resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
                fut.cancel()
                outcomes.append(AmqpPublishError(f"message {item.message_id} not confirmed in time"))
            elif fut.cancelled():
                outcomes.append(AmqpPublishError(f"message {item.message_id} was withdrawn"))
            else:
                exc = fut.exception()
                outcomes.append(exc if exc is not None else fut.result())
        return _collect(outcomes)

    # -- the I/O thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        ioloop = self._ioloop
        ioloop.call_later(0, self._connect)
        ioloop.call_later(_HOUSEKEEPING_S, self._housekeeping)
        try:
            ioloop.start()
        except Exception:  # a bug in a callback: log it, then fail what is left rather than hang callers
            self._log.exception("AMQP I/O loop failed", extra={"event": "amqp.loop_failed"})
        finally:
            self._connected.clear()
            with self._lock:
                self._accepting = False
                leftovers = list(self._pending)
                self._pending.clear()
            leftovers.extend(self._tracker.reset())
            for item in leftovers:
                _resolve(item, AmqpPublishError("publisher closed before the message was confirmed"))
                self._slots.release()
            with contextlib.suppress(Exception):
                ioloop.close()

    def _connect(self) -> None:
        self._reconnect_timer = None
        if self._finishing:
            self._ioloop.stop()
            return
        pika = _pika()
        try:
            params = pika.URLParameters(self.config.url)
            params.heartbeat = self.config.heartbeat_s
            params.blocked_connection_timeout = self.config.confirm_timeout_s
            params.socket_timeout = self.config.connect_timeout_s
            params.stack_timeout = self.config.connect_timeout_s * 2
            params.connection_attempts = 1
            self._connection = pika.SelectConnection(
                params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_open_error,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=self._ioloop,
            )
        except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
            self._connection = None
            self._on_connection_open_error(None, exc)

    def _schedule_reconnect(self) -> None:
        self._failures += 1
        if self._finishing:
            self._ioloop.stop()
            return
        delay = backoff_delay(
            self._failures, self.config.reconnect_initial_s, self.config.reconnect_max_s, rng=self._rng
        )
        self._reconnect_timer = self._ioloop.call_later(delay, self._connect)

    def _on_connection_open_error(self, _connection: Any, error: BaseException) -> None:
        self._connection = None
        if self._finishing:
            self._ioloop.stop()
            return
        self.last_error = f"connect: {type(error).__name__}: {error}"
        self._log.warning(
            "AMQP connect failed",
            extra={"event": "amqp.connect_failed", "failures": self._failures + 1, "error": self.last_error},
        )
        self._schedule_reconnect()

    def _on_connection_open(self, connection: Any) -> None:
        if self._finishing:
            connection.close()
            return
        self._generation += 1
        connection.channel(on_open_callback=functools.partial(self._on_channel_open, self._generation))

    def _on_channel_open(self, generation: int, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(functools.partial(self._on_channel_closed, generation))
        channel.add_on_return_callback(functools.partial(self._on_return, generation))
        channel.exchange_declare(
            self.config.exchange,
            exchange_type="topic",
            durable=True,
            callback=functools.partial(self._on_exchange_ok, generation),
        )

    def _on_exchange_ok(self, generation: int, _frame: Any) -> None:
        if not self.config.queue:
            self._enable_confirms(generation)
            return
        queue = self.config.queue

        def bind(_frame: Any) -> None:
            self._channel.queue_bind(
                queue,
                self.config.exchange,
                routing_key=self.config.queue_binding,
                callback=lambda _f: self._enable_confirms(generation),
            )

        self._channel.queue_declare(queue, durable=True, callback=bind)

    def _enable_confirms(self, generation: int) -> None:
        self._channel.confirm_delivery(
            functools.partial(self._on_confirm, generation),
            callback=functools.partial(self._on_confirms_enabled, generation),
        )

    def _on_confirms_enabled(self, generation: int, _frame: Any) -> None:
        if generation != self._generation:
            return
        self._tracker = _ConfirmTracker()  # delivery tags restart at 1 on every channel
        self._ready = True
        if self._failures and self._ever_ready:
            self.reconnects += 1
        self._ever_ready = True
        self._failures = 0
        self._connected.set()
        self._log.info("AMQP connected", extra={"event": "amqp.connected", "exchange": self.config.exchange})
        self._pump()

    def _on_channel_closed(self, generation: int, _channel: Any, reason: BaseException) -> None:
        if generation != self._generation or self._finishing:
            return
        self._ready = False
        self._connected.clear()
        self.last_error = f"channel closed: {type(reason).__name__}: {reason}"
        # A channel closed by the broker (e.g. an exchange of another type) leaves the connection open:
        # close it too, so the single reconnect path (backoff, republication) applies.
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._generation += 1
        self._connection = None
        self._channel = None
        self._ready = False
        self._connected.clear()
        # Every unconfirmed message may or may not have reached the broker: publish it again on the next
        # channel, ahead of newer messages (same message_id, so consumers can drop a duplicate).
        unconfirmed = self._tracker.reset()
        retry: list[_Outgoing] = []
        for item in unconfirmed:
            if item.future.done():  # timed out or withdrawn meanwhile
                self._slots.release()
            else:
                retry.append(item)
        with self._lock:
            self._pending.extendleft(reversed(retry))
        if self._finishing:  # close() gave up: _run fails what is left
            self._ioloop.stop()
            return
        self.republished += len(retry)
        self.last_error = f"connection lost: {type(reason).__name__}: {reason}"
        self._log.warning(
            "AMQP connection lost",
            extra={"event": "amqp.disconnected", "error": self.last_error, "republish": len(retry)},
        )
        self._schedule_reconnect()

    def _on_wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._pump()

    def _pump(self) -> None:
        """Publish queued messages while the in-flight window has room."""
        if not self._ready:
            return
        room = self.config.max_in_flight - len(self._tracker)
        if room <= 0:
            return
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
        pika = _pika()
        for index, item in enumerate(batch):
            if item.future.done():  # timed out or withdrawn before it was published
                self._slots.release()
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
            try:
                self._channel.basic_publish(
                    self.config.exchange,
                    item.routing_key,
                    item.body,
                    properties=properties,
                    mandatory=self.config.mandatory,
                )
            except pika.exceptions.AMQPError:
                # The channel is going away (its close callback follows): keep the rest for the next one.
                with self._lock:
                    self._pending.extendleft(reversed(batch[index:]))
                return
            self._tracker.sent(item)
        self._maybe_finish()

    def _on_return(self, generation: int, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        if generation != self._generation:
            return
        reply = f"{method.reply_code} {method.reply_text}"
        if self._tracker.mark_returned(properties.message_id, method.routing_key, reply) is None:
            self._log.warning(
                "AMQP return for an unknown message",
                extra={"event": "amqp.unknown_return", "message_id": properties.message_id},
            )

    def _on_confirm(self, generation: int, frame: Any) -> None:
        if generation != self._generation:
            return
        pika = _pika()
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        requeue: list[_Outgoing] = []
        for item in self._tracker.settle(method.delivery_tag, bool(method.multiple)):
            if item.returned is not None:
                error: AmqpPublishError | None = AmqpPublishError(
                    f"message {item.message_id} is unroutable ({item.routing_key!r}: {item.returned})"
                )
            elif acked:
                error = None
                self.published += 1
            elif item.nacks < self.config.nack_retries and not item.future.done():
                item.nacks += 1
                requeue.append(item)
                continue
            else:
                error = AmqpPublishError(f"message {item.message_id} was nacked by the broker")
            _resolve(item, error)
            self._slots.release()
        if requeue:
            with self._lock:
                self._pending.extendleft(reversed(requeue))
        self._pump()

    def _housekeeping(self) -> None:
        """Fail messages past their deadline (so every future resolves) and bound :meth:`close`."""
        now = time.monotonic()
        expired: list[_Outgoing] = []
        with self._lock:
            if any(item.deadline <= now or item.future.done() for item in self._pending):
                keep: collections.deque[_Outgoing] = collections.deque()
                for item in self._pending:
                    (expired if item.deadline <= now or item.future.done() else keep).append(item)
                self._pending = keep
        for item in expired:
            _resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
            self._slots.release()
        # Published messages past their deadline stay tracked (their confirm may still come) but the caller
        # is told now: it was not confirmed in time.
        for item in self._tracker.items():
            if item.deadline <= now:
                _resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
        self._maybe_finish()
        self._ioloop.call_later(_HOUSEKEEPING_S, self._housekeeping)

    def _on_close_requested(self, deadline: float) -> None:
        self._stopping = True
        self._close_deadline = deadline
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """While closing: close the connection once everything is confirmed or the close deadline passed."""
        if not self._stopping:
            return
        now = time.monotonic()
        if self._finishing:
            if now >= self._close_deadline + self.config.connect_timeout_s:
                self._ioloop.stop()  # the broker never answered Connection.Close
            return
        with self._lock:
            drained = not self._pending
        if not (drained and len(self._tracker) == 0) and now < self._close_deadline:
            return
        self._finishing = True
        self._ready = False
        if self._reconnect_timer is not None:
            self._ioloop.remove_timeout(self._reconnect_timer)
            self._reconnect_timer = None
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()  # _on_connection_closed stops the loop once the broker answered
            return
        if connection is not None and not (connection.is_closed or connection.is_closing):
            # Still connecting: nothing can be drained through it any more. pika aborts the attempt
            # asynchronously and closes its socket on the loop, then reports through
            # _on_connection_open_error, which stops the loop; stopping it here would leave the socket open.
            # _housekeeping stops the loop anyway once the close deadline plus the connect timeout passed.
            try:
                connection.close()
            except Exception:  # already failing: nothing left to wait for
                self._ioloop.stop()
            return
        self._ioloop.stop()


def _check_url(pika: Any, url: str) -> None:
    """Reject a URL pika cannot use now rather than retrying it forever (the URL is not echoed: it may
    hold a password)."""
    scheme = url.partition("://")[0].lower()
    if scheme not in ("amqp", "amqps"):
        raise ValueError(f"AMQP URL must start with amqp:// or amqps://, not {scheme!r:.20}")
    try:
        pika.URLParameters(url)
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"invalid AMQP URL: {exc.__class__.__name__}") from None


def _collect(outcomes: Sequence[str | BaseException]) -> list[str]:
    """Message ids of a batch, or the single error / an AmqpPublishError counting the failures."""
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if not errors:
        return [outcome for outcome in outcomes if isinstance(outcome, str)]
    if len(outcomes) == 1:
        raise errors[0]
    raise AmqpPublishError(
        f"{len(errors)} of {len(outcomes)} messages not confirmed (first: {errors[0]})"
    ) from errors[0]


def _pika() -> Any:
    """Import pika on first use (optional extra ``amqp``)."""
    try:
        import pika
        import pika.adapters.select_connection
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise AmqpPublishError("the AMQP publisher needs pika: pip install 'em-agent[amqp]'") from exc
    return pika


__all__ = ["AmqpEventPublisher", "AmqpPublisherConfig", "canonical_json", "message_id_for"]
