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

pika is imported lazily, so ``backend_client`` works without the extra. This module is the caller-thread half;
the I/O thread's callbacks are in :mod:`backend_client.amqp_loop`, the settings, message ids and the confirm
bookkeeping in :mod:`backend_client.amqp_messages`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from backend_client.amqp_loop import AmqpIoLoop, check_amqp_url, load_pika
from backend_client.amqp_messages import (
    AmqpPublisherConfig,
    ConfirmTracker,
    EventBody,
    Outgoing,
    canonical_json,
    message_id_for,
    resolve,
)
from backend_client.errors import AmqpPublishError

#: Extra wait of a blocked caller beyond its deadline: the I/O thread resolves every message by its deadline
#: within one housekeeping period; this only guards against a stuck I/O thread.
_CALLER_GRACE_S = 1.0
#: Messages moved from caller threads into the pending queue per lock acquisition and loop wake-up.
_SUBMIT_CHUNK = 256


class AmqpEventPublisher(AmqpIoLoop):
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
        self._pending: collections.deque[Outgoing] = collections.deque()
        self._accepting = False
        self._wake_scheduled = False
        # One slot per unresolved message: callers block here when max_pending is reached (backpressure).
        self._slots = threading.BoundedSemaphore(self.config.max_pending)
        # Owned by the I/O thread only.
        self._ioloop: Any = None
        self._connection: Any = None
        self._channel: Any = None
        self._generation = 0  # bumped per connection: callbacks of a dead channel are ignored
        self._tracker = ConfirmTracker()
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
        pika = load_pika()  # fail early with a clear message when the extra is missing
        check_amqp_url(pika, self.config.url)
        self._closing.clear()
        self._stopping = self._finishing = False
        self._failures = 0
        self._tracker = ConfirmTracker()
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
    ) -> Outgoing:
        if not isinstance(routing_key, str) or len(routing_key.encode()) > 255:
            raise ValueError(f"routing key must be a string of at most 255 bytes, got {routing_key!r:.80}")
        body = event if isinstance(event, bytes) else canonical_json(event)
        return Outgoing(
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

    def _enqueue(self, items: Sequence[Outgoing]) -> None:
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
                resolve(item, AmqpPublishError("publisher closed before the message was confirmed"))
                self._slots.release()
            return
        if wake:
            self._ioloop.add_callback_threadsafe(self._on_wake)

    def _submit_all(self, items: Sequence[Outgoing], *, block: bool = True) -> int:
        """Take a backlog slot for each item (blocking up to its deadline) and enqueue them in chunks.

        Items that get no slot in time fail with "backlog full". Returns how many items were handled: all of
        them, or with ``block=False`` those before the first one that would have to wait for a slot.
        """
        chunk: list[Outgoing] = []
        for index, item in enumerate(items):
            if not self._slots.acquire(blocking=False):
                # Enqueue what this caller holds first: waiting while holding unqueued slots could deadlock.
                self._enqueue(chunk)
                chunk = []
                if not block:
                    return index
                wait = item.deadline - time.monotonic()
                if not (wait > 0 and self._slots.acquire(timeout=wait)):
                    resolve(
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

    def _wait(self, item: Outgoing) -> str:
        remaining = item.deadline - time.monotonic() + _CALLER_GRACE_S
        try:
            return item.future.result(timeout=max(0.0, remaining))
        except concurrent.futures.TimeoutError:
            resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
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

    async def _publish_items_async(self, items: list[Outgoing]) -> list[str]:
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
                resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
                fut.cancel()
                outcomes.append(AmqpPublishError(f"message {item.message_id} not confirmed in time"))
            elif fut.cancelled():
                outcomes.append(AmqpPublishError(f"message {item.message_id} was withdrawn"))
            else:
                exc = fut.exception()
                outcomes.append(exc if exc is not None else fut.result())
        return _collect(outcomes)


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


__all__ = ["AmqpEventPublisher", "AmqpPublisherConfig", "canonical_json", "message_id_for"]
