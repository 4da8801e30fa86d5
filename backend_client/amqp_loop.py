"""The I/O-thread half of :class:`backend_client.amqp.AmqpEventPublisher`: the pika ``IOLoop`` that owns the
connection, channel set-up with publisher confirms, the pump from the pending queue into the channel, confirms
and returns, reconnects with backoff, deadline housekeeping and the bounded close.

Every method here runs on the publisher's one I/O thread (see the threading model in :mod:`backend_client.amqp`);
the caller-thread half (lifecycle and publishing) is in that module. The split is by thread, so that what may
touch pika state is visible from the file it is in.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import random
import threading
import time
from typing import Any

from backend_client.amqp_messages import AmqpPublisherConfig, ConfirmTracker, Outgoing, resolve
from backend_client.errors import AmqpPublishError
from backend_client.retry import backoff_delay

#: Period of the I/O thread's housekeeping (deadline expiry, bounded close), s.
HOUSEKEEPING_S = 0.2


class AmqpIoLoop:
    """State and callbacks of the I/O thread; :class:`~backend_client.amqp.AmqpEventPublisher` initialises the
    state and adds the caller-thread API."""

    config: AmqpPublisherConfig
    _log: logging.Logger
    _rng: random.Random
    _closing: threading.Event
    _connected: threading.Event
    # Shared between caller threads and the I/O thread (guarded by _lock).
    _lock: threading.Lock
    _pending: collections.deque[Outgoing]
    _accepting: bool
    _wake_scheduled: bool
    _slots: threading.BoundedSemaphore
    # Owned by the I/O thread only.
    _ioloop: Any
    _connection: Any
    _channel: Any
    _generation: int
    _tracker: ConfirmTracker
    _ready: bool
    _ever_ready: bool
    _failures: int
    _reconnect_timer: Any
    _stopping: bool
    _finishing: bool
    _close_deadline: float
    published: int
    reconnects: int
    republished: int
    last_error: str | None

    # -- the I/O thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        ioloop = self._ioloop
        ioloop.call_later(0, self._connect)
        ioloop.call_later(HOUSEKEEPING_S, self._housekeeping)
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
                resolve(item, AmqpPublishError("publisher closed before the message was confirmed"))
                self._slots.release()
            with contextlib.suppress(Exception):
                ioloop.close()

    def _connect(self) -> None:
        self._reconnect_timer = None
        if self._finishing:
            self._ioloop.stop()
            return
        pika = load_pika()
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
        self._tracker = ConfirmTracker()  # delivery tags restart at 1 on every channel
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
        retry: list[Outgoing] = []
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
        pika = load_pika()
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
        pika = load_pika()
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        requeue: list[Outgoing] = []
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
            resolve(item, error)
            self._slots.release()
        if requeue:
            with self._lock:
                self._pending.extendleft(reversed(requeue))
        self._pump()

    def _housekeeping(self) -> None:
        """Fail messages past their deadline (so every future resolves) and bound :meth:`close`."""
        now = time.monotonic()
        expired: list[Outgoing] = []
        with self._lock:
            if any(item.deadline <= now or item.future.done() for item in self._pending):
                keep: collections.deque[Outgoing] = collections.deque()
                for item in self._pending:
                    (expired if item.deadline <= now or item.future.done() else keep).append(item)
                self._pending = keep
        for item in expired:
            resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
            self._slots.release()
        # Published messages past their deadline stay tracked (their confirm may still come) but the caller
        # is told now: it was not confirmed in time.
        for item in self._tracker.items():
            if item.deadline <= now:
                resolve(item, AmqpPublishError(f"message {item.message_id} not confirmed in time"))
        self._maybe_finish()
        self._ioloop.call_later(HOUSEKEEPING_S, self._housekeeping)

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


def check_amqp_url(pika: Any, url: str) -> None:
    """Reject a URL pika cannot use now rather than retrying it forever (the URL is not echoed: it may
    hold a password)."""
    scheme = url.partition("://")[0].lower()
    if scheme not in ("amqp", "amqps"):
        raise ValueError(f"AMQP URL must start with amqp:// or amqps://, not {scheme!r:.20}")
    try:
        pika.URLParameters(url)
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"invalid AMQP URL: {exc.__class__.__name__}") from None


def load_pika() -> Any:
    """Import pika on first use (optional extra ``amqp``)."""
    try:
        import pika
        import pika.adapters.select_connection
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise AmqpPublishError("the AMQP publisher needs pika: pip install 'em-agent[amqp]'") from exc
    return pika
