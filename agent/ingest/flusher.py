"""The outbox flusher: sends dirty entities to the backend, parents first, batched, bounded, idempotent.

Each round reads the sendable rows (due, parent confirmed by the backend) in send order and posts them, all kinds
at once (a row is sendable only when its parent is confirmed, so no row of a round depends on another): grid
squares through the batch endpoint (one request per grid), foil holes in one request per grid square, micrographs
through the testbed's batch extension (falling back to single posts on a backend without it), everything else one
by one. Requests run concurrently up to ``flush_concurrency``.

What each kind needs (request model, create, update and batch request specs, send order) comes from the table of
:mod:`agent.ingest.kinds`; every request goes out through the client's one ``request(spec)`` call, under its
retry policy. Idempotence comes from the deterministic UUIDs: a create the backend already holds is answered with
409 (strict backends) or 500 (SmartEM's unhandled integrity error); the flusher then confirms the entity exists (a
GET after a 500) and sends an update instead. A row is deleted only after the backend confirmed its payload
version.

While the backend is unavailable, rows stay in the database and the flusher backs off with the retry policy's
backoff, for ever; a 4xx rejection keeps the row too, retried after ``rejected_retry_s`` with the error recorded
for ``error_info``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from agent.ingest.config import IngestConfig
from agent.ingest.identity import EntityKind
from agent.ingest.kinds import KINDS, KindSpec
from agent.ingest.store import IngestStore, OutboxItem
from backend_client import operations as ops
from backend_client.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    RequestRejectedError,
    ServerError,
)
from backend_client.retry import RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")


class IngestClient(Protocol):
    """The part of ``backend_client.AsyncSmartEMAPIClient`` the flusher uses: one call that sends a request spec
    under the client's retry policy."""

    async def request(self, spec: ops.RequestSpec[T]) -> T:
        """Send ``spec``; the parsed response, or a :class:`~backend_client.errors.BackendError`."""
        ...


class _Unavailable(Exception):
    """The backend could not be reached: abort the round and back off."""


@dataclass(slots=True)
class FlushMetrics:
    """Counters of what the flusher did since start (JSON-serialisable through :meth:`snapshot`)."""

    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    conflicts: int = 0
    rejected: int = 0
    unavailable_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    confirm_latency: list[float] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data."""
        return {
            "created": dict(self.created),
            "updated": dict(self.updated),
            "posted_total": sum(self.created.values()) + sum(self.updated.values()),
            "requests": self.requests,
            "conflicts_resolved": self.conflicts,
            "rejected": self.rejected,
            "backend_available": self.unavailable_since is None,
            "backend_unavailable_for_s": None
            if self.unavailable_since is None
            else round(time.monotonic() - self.unavailable_since, 3),
        }


def _chunks(items: Sequence[OutboxItem], size: int) -> list[Sequence[OutboxItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class OutboxFlusher:
    """Drains the outbox into the backend; :meth:`run` loops until cancelled, :meth:`flush_once` does one pass."""

    def __init__(
        self,
        config: IngestConfig,
        store: IngestStore,
        client: IngestClient,
        *,
        on_confirmed: Callable[[Sequence[OutboxItem]], None] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._client = client
        self._on_confirmed = on_confirmed
        self._sem = asyncio.Semaphore(config.flush_concurrency)
        self._wake = asyncio.Event()
        # Kinds whose optional batch endpoint the backend lacks (SmartEM has no micrograph batch).
        self._no_batch: set[EntityKind] = set()
        # Waits between rounds while the backend is unreachable (or a round failed): the one retry policy's
        # backoff (full jitter), which the flusher applies for ever: rows are never dropped.
        self._backoff = RetryPolicy(
            wait_initial=config.flush_retry_initial_s, wait_max=config.flush_retry_max_s
        )
        self.metrics = FlushMetrics()
        self._failures = 0

    def wake(self) -> None:
        """New rows were committed: start a round now."""
        self._wake.set()

    async def run(self) -> None:
        """Flush forever: a round whenever woken, when deferred rows fall due, and after backoffs."""
        while True:
            self._wake.clear()
            try:
                progressed = await self.flush_once()
            except Exception as exc:
                if not isinstance(exc, _Unavailable):
                    # A bug or a corrupt row must not stop the flusher for good: report it, back off, go on.
                    log.exception("ingest.flush_failed", extra={"event": "ingest.flush_failed"})
                    self._note_error(f"flush round failed: {type(exc).__name__}: {exc}")
                self._failures += 1
                # The client already honoured any Retry-After within its own attempts: plain backoff here.
                await self._sleep_or_wake(self._backoff.backoff(self._failures), wakeable=False)
                continue
            self._failures = 0
            if progressed:
                continue
            due = await asyncio.to_thread(self._store.next_due)
            timeout = 5.0 if due is None else min(max(due - time.time(), 0.01), 5.0)
            await self._sleep_or_wake(timeout, wakeable=True)

    async def _sleep_or_wake(self, delay_s: float, *, wakeable: bool) -> None:
        if not wakeable:
            await asyncio.sleep(delay_s)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), delay_s)
        except TimeoutError:
            return

    async def flush_once(self) -> int:
        """One round over what is sendable now; returns the number of rows confirmed.

        Raises ``_Unavailable`` (internal) when the backend could not be reached.
        """
        limit = self._config.flush_batch * self._config.flush_concurrency * 2
        items = await asyncio.to_thread(self._store.sendable, limit, time.time())
        if not items:
            return 0
        by_kind: dict[EntityKind, list[OutboxItem]] = defaultdict(list)
        for item in items:
            by_kind[item.kind].append(item)
        # Every row returned is sendable on its own (its parent is already confirmed), so the kinds need not
        # wait for each other: a storm of single updates (e.g. the atlas refining every grid square) must not
        # hold back the micrographs behind it. Creates are started first, parents' kinds first, because they
        # unblock children in the next round; the semaphore admits waiters in that order.
        ops: list[Awaitable[int]] = []
        for kind in sorted(by_kind, key=lambda k: KINDS[k].send_order):
            ops.extend(self._create_ops(kind, [i for i in by_kind[kind] if not i.created]))
        for kind in sorted(by_kind, key=lambda k: KINDS[k].send_order):
            ops.extend(self._send_update(i) for i in by_kind[kind] if i.created)
        results = await asyncio.gather(*ops, return_exceptions=True)
        confirmed = 0
        unavailable: BaseException | None = None
        failure: BaseException | None = None
        for res in results:
            if isinstance(res, _Unavailable):
                unavailable = res
            elif isinstance(res, BaseException):
                failure = failure or res
            else:
                confirmed += res
        if failure is not None:
            raise failure
        if unavailable is not None:
            raise unavailable
        if self.metrics.unavailable_since is not None:
            log.info("ingest.backend_available", extra={"event": "ingest.backend_available"})
            self.metrics.unavailable_since = None
        return confirmed

    # ------------------------------------------------------------------ creates

    def _create_ops(self, kind: EntityKind, creates: list[OutboxItem]) -> list[Awaitable[int]]:
        if not creates:
            return []
        spec = KINDS[kind]
        batch = spec.batch
        if batch is None or kind in self._no_batch or len(creates) < batch.min_size:
            return [self._create_single(i) for i in creates]
        groups: dict[str | None, list[OutboxItem]] = defaultdict(list)
        for i in creates:
            groups[i.parent_uuid if batch.per_parent else None].append(i)
        return [
            self._create_batch(spec, parent, chunk)
            for parent, group in groups.items()
            for chunk in _chunks(group, self._config.flush_batch)
        ]

    async def _call(self, spec: ops.RequestSpec[Any]) -> Any:
        """One request under the concurrency bound; transport failures abort the round."""
        async with self._sem:
            self.metrics.requests += 1
            try:
                return await self._client.request(spec)
            except BackendUnavailableError as exc:
                self._note_unavailable(exc)
                raise _Unavailable(str(exc)) from exc

    async def _create_batch(
        self, spec: KindSpec[Any], parent: str | None, chunk: Sequence[OutboxItem]
    ) -> int:
        batch = spec.batch
        assert batch is not None  # _create_ops batches only kinds that have a batch endpoint
        try:
            await self._call(batch.build(parent, [spec.request(i.payload) for i in chunk]))
        except NotFoundError as exc:
            about_parent = spec.parent is not None and spec.parent.value in (exc.detail or "").lower()
            if not batch.optional or (about_parent and spec.kind not in self._no_batch):
                await self._parent_missing(chunk)
                return 0
            # The backend lacks this extension (SmartEM has no micrograph batch): single creates from now on.
            if spec.kind not in self._no_batch:
                log.info(f"ingest.{spec.kind.value}_batch_unsupported", extra={"event": "ingest.fallback"})
            self._no_batch.add(spec.kind)
            return await self._create_each(chunk)
        except (ConflictError, ServerError, RequestRejectedError):
            # Some of the batch already exists (restart after a lost confirmation, or lost state), or one row is
            # bad: sort it out entity by entity, each create becoming an update where the backend holds it.
            return await self._create_each(chunk)
        await self._confirm(chunk, created=True)
        return len(chunk)

    async def _create_each(self, chunk: Sequence[OutboxItem]) -> int:
        results = await asyncio.gather(*(self._create_single(i) for i in chunk), return_exceptions=True)
        total = 0
        for res in results:
            if isinstance(res, BaseException):
                raise res
            total += res
        return total

    async def _create_single(self, item: OutboxItem) -> int:
        spec = KINDS[item.kind]
        request = spec.create(spec.request(item.payload), item.uuid, item.parent_uuid)
        try:
            await self._call(request)
        except ConflictError:
            return await self._exists_then_update(item, known=True)
        except ServerError as exc:
            return await self._exists_then_update(item, known=False, error=exc)
        except NotFoundError:
            await self._parent_missing([item])
            return 0
        except RequestRejectedError as exc:
            await self._reject([item], exc)
            return 0
        await self._confirm([item], created=True)
        return 1

    async def _exists_then_update(
        self, item: OutboxItem, *, known: bool, error: BackendError | None = None
    ) -> int:
        """A create collided with an existing row: make sure it is there, then send our payload as an update."""
        self.metrics.conflicts += 1
        if KINDS[item.kind].repeat_is_done:
            await self._confirm([item], created=True)
            return 1
        if not known:
            try:
                await self._call(ops.get_entity(item.kind.value, item.uuid))
            except NotFoundError:
                await self._reject([item], error or ServerError("create failed"))
                return 0
        await asyncio.to_thread(self._store.mark_exists, [item.uuid], time.time())
        return await self._send_update(item)

    # ------------------------------------------------------------------ updates

    async def _send_update(self, item: OutboxItem) -> int:
        spec = KINDS[item.kind]
        if spec.update is not None:
            try:
                await self._call(spec.update(spec.request(item.payload), item.uuid, item.parent_uuid))
            except NotFoundError:
                # The backend lost it (or never had it): create it again on the next round.
                await asyncio.to_thread(self._store.mark_missing, [item.uuid], time.time())
                return 0
            except (ConflictError, ServerError) as exc:
                if spec.repeat_is_done:
                    await self._confirm([item], created=False)
                    return 1
                await self._reject([item], exc)
                return 0
            except RequestRejectedError as exc:
                await self._reject([item], exc)
                return 0
        await self._confirm([item], created=False)
        return 1

    # ----------------------------------------------------------------- outcomes

    async def _confirm(self, items: Sequence[OutboxItem], *, created: bool) -> None:
        await asyncio.to_thread(self._store.confirm, items, time.time())
        counter = self.metrics.created if created else self.metrics.updated
        for i in items:
            counter[i.kind.value] += 1
        if self._on_confirmed is not None:
            self._on_confirmed(items)

    async def _parent_missing(self, items: Sequence[OutboxItem]) -> None:
        """The backend does not know the parent: re-create the parent, retry the children shortly after."""
        parents = {i.parent_uuid for i in items if i.parent_uuid is not None}
        now = time.time()
        await asyncio.to_thread(self._store.mark_missing, parents, now)
        await asyncio.to_thread(self._store.defer, items, "parent missing on the backend", 0.2, now)
        self._note_error(f"parent missing on the backend for {len(items)} {items[0].kind.value}(s)")

    async def _reject(self, items: Sequence[OutboxItem], exc: BackendError) -> None:
        self.metrics.rejected += len(items)
        self._note_error(str(exc))
        log.warning(
            "ingest.rejected",
            extra={
                "event": "ingest.rejected",
                "kind": items[0].kind.value,
                "count": len(items),
                "error": str(exc),
            },
        )
        await asyncio.to_thread(
            self._store.defer, items, str(exc), self._config.rejected_retry_s, time.time()
        )

    def _note_unavailable(self, exc: BaseException) -> None:
        if self.metrics.unavailable_since is None:
            self.metrics.unavailable_since = time.monotonic()
            log.warning(
                "ingest.backend_unavailable", extra={"event": "ingest.backend_unavailable", "error": str(exc)}
            )
        self._note_error(str(exc))

    def _note_error(self, text: str) -> None:
        self.metrics.last_error = text[:500]
        self.metrics.last_error_at = time.time()


__all__ = ["FlushMetrics", "IngestClient", "OutboxFlusher"]
