"""Entity events on a message bus (optional): every change the backend confirmed, published to RabbitMQ.

For facilities that run a bus next to the SmartEM backend. The backend stays the record of truth; these events
are notifications, so the bridge never holds up ingest: confirmations are queued (bounded) and published in
batches with publisher confirms by ``backend_client.AmqpEventPublisher``. When the broker is unreachable for long
enough to fill the queue, the oldest events are dropped and counted (``dropped`` in the status line). Each event
has a deterministic ``message_id`` (entity uuid, operation and payload hash), so consumers can deduplicate the
re-publications that a reconnect can cause.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from agent.aio import cancel_and_wait

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    """The part of ``AmqpEventPublisher`` the bridge uses."""

    def open(self) -> None:
        """Connect (in the publisher's own thread)."""

    def close(self, timeout: float = 10.0) -> None:
        """Flush and disconnect."""

    async def publish_many_async(self, messages: Any, *, confirm_timeout_s: float | None = None) -> list[str]:
        """Publish and wait for every confirm."""


def event_for(item: Any) -> tuple[str, dict[str, Any]]:
    """``(routing key, body)`` for one confirmed outbox item; the routing key is SmartEM's event type."""
    kind = str(item.kind)
    # ``created`` on an outbox item means the backend already held the entity when it was sent: an update.
    operation = "updated" if item.created else "created"
    event_type = f"{kind}.{operation}"
    body = {
        "event_type": event_type,
        "uuid": item.uuid,
        "parent_uuid": item.parent_uuid,
        "version": item.version,
        "payload_hash": item.payload_hash,
        "message_id": f"{item.uuid}:{operation}:{item.payload_hash}",
        "data": item.payload,
    }
    return event_type, body


class EntityEventBridge:
    """Publishes confirmed ingest operations; ``on_confirmed`` is the ingest service's confirm listener."""

    def __init__(self, publisher: EventPublisher, *, capacity: int = 10_000, batch: int = 500) -> None:
        self._publisher = publisher
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._capacity = capacity
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    def on_confirmed(self, items: Sequence[Any]) -> None:
        """Queue events for items the backend confirmed (called on the event loop; never blocks)."""
        for item in items:
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event_for(item))
        self._wake.set()

    async def start(self) -> None:
        """Connect to the broker and start publishing."""
        await asyncio.to_thread(self._publisher.open)
        self._task = asyncio.create_task(self._run(), name="amqp-events")

    async def stop(self) -> None:
        """Publish what is queued (bounded by the publisher's confirm timeout), then disconnect."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await self._flush_once(confirm_timeout_s=5.0)
        await asyncio.to_thread(self._publisher.close, 5.0)

    async def _flush_once(self, *, confirm_timeout_s: float | None = None) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
        if not batch:
            return
        try:
            await self._publisher.publish_many_async(batch, confirm_timeout_s=confirm_timeout_s)
            self.published += len(batch)
        except Exception as exc:
            # Put the batch back in front (bounded): it is retried after a pause; the deterministic message
            # ids make any partial re-publication harmless to consumers that deduplicate.
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            for event in reversed(batch):
                if len(self._queue) >= self._capacity:
                    self.dropped += 1
                    continue
                self._queue.appendleft(event)
            log.warning("amqp.publish_failed", extra={"error": self.last_error, "queued": len(self._queue)})
            raise

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            try:
                await self._flush_once()
            except Exception:
                await asyncio.sleep(2.0)

    def snapshot(self) -> dict[str, Any]:
        """Counters for the status line."""
        return {
            "queued": len(self._queue),
            "published": self.published,
            "dropped": self.dropped,
            "failures": self.failures,
            "last_error": self.last_error,
        }
