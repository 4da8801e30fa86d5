"""The outbox flusher: sends dirty entities to the backend, parents first, batched, bounded, idempotent.

Each round reads the sendable rows (due, parent confirmed by the backend) in send order and posts them, all kinds
at once (a row is sendable only when its parent is confirmed, so no row of a round depends on another): grid
squares through the batch endpoint (one request per grid), foil holes in one request per grid square, micrographs
through the testbed's batch extension (falling back to single posts on a backend without it), everything else one
by one. Requests run concurrently up to ``flush_concurrency``.

Idempotence comes from the deterministic UUIDs: a create the backend already holds is answered with 409 (strict
backends) or 500 (SmartEM's unhandled integrity error); the flusher then confirms the entity exists (a GET after a
500) and sends an update instead. A row is deleted only after the backend confirmed its payload version.

While the backend is unavailable, rows stay in the database and the flusher backs off exponentially; a 4xx
rejection keeps the row too, retried after ``rejected_retry_s`` with the error recorded for ``error_info``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from agent.ingest.config import IngestConfig
from agent.ingest.identity import SEND_ORDER, EntityKind
from agent.ingest.store import IngestStore, OutboxItem
from backend_client.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    RequestRejectedError,
    ServerError,
)
from converters.requests import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographCreateRequest,
)

log = logging.getLogger(__name__)


class IngestClient(Protocol):
    """The part of ``backend_client.AsyncSmartEMAPIClient`` the flusher uses (request-model level methods)."""

    async def create_acquisition_request(self, req: AcquisitionCreateRequest) -> Any: ...
    async def update_acquisition_request(self, req: AcquisitionCreateRequest) -> Any: ...
    async def create_grid_request(self, req: GridCreateRequest) -> Any: ...
    async def update_grid_request(self, req: GridCreateRequest) -> Any: ...
    async def create_atlas_request(self, req: AtlasCreateRequest) -> Any: ...
    async def link_tile_gridsquares_request(
        self, tile_uuid: str, positions: list[GridSquarePositionRequest]
    ) -> Any: ...
    async def create_gridsquare_request(self, req: GridSquareCreateRequest) -> Any: ...
    async def create_gridsquares_batch_request(
        self, grid_uuid: str, reqs: list[GridSquareCreateRequest]
    ) -> Any: ...
    async def update_gridsquare_request(self, req: GridSquareCreateRequest) -> Any: ...
    async def create_foilholes_request(
        self, gridsquare_uuid: str, reqs: list[FoilHoleCreateRequest]
    ) -> Any: ...
    async def update_foilhole_request(self, req: FoilHoleCreateRequest) -> Any: ...
    async def create_micrograph_request(self, req: MicrographCreateRequest) -> Any: ...
    async def create_micrographs_batch_request(self, reqs: list[MicrographCreateRequest]) -> Any: ...
    async def update_micrograph_request(self, req: MicrographCreateRequest) -> Any: ...
    async def get_entity(self, kind: str, uuid: str) -> Any: ...


_MODELS: dict[EntityKind, type[BaseModel]] = {
    EntityKind.ACQUISITION: AcquisitionCreateRequest,
    EntityKind.GRID: GridCreateRequest,
    EntityKind.ATLAS: AtlasCreateRequest,
    EntityKind.GRIDSQUARE: GridSquareCreateRequest,
    EntityKind.FOILHOLE: FoilHoleCreateRequest,
    EntityKind.MICROGRAPH: MicrographCreateRequest,
}


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


def _request(item: OutboxItem) -> BaseModel:
    return _MODELS[item.kind].model_validate(item.payload)


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
        self._micrograph_batch = True
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
            except _Unavailable:
                self._failures += 1
                delay = min(
                    self._config.flush_retry_initial_s * 2 ** (self._failures - 1),
                    self._config.flush_retry_max_s,
                )
                await self._sleep_or_wake(delay, wakeable=False)
                continue
            except Exception as exc:
                # A bug or a corrupt row must not stop the flusher for good: report it, back off, go on.
                log.exception("ingest.flush_failed", extra={"event": "ingest.flush_failed"})
                self._note_error(f"flush round failed: {type(exc).__name__}: {exc}")
                self._failures += 1
                delay = min(
                    self._config.flush_retry_initial_s * 2 ** (self._failures - 1),
                    self._config.flush_retry_max_s,
                )
                await self._sleep_or_wake(delay, wakeable=False)
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
        for kind in sorted(by_kind, key=SEND_ORDER.__getitem__):
            ops.extend(self._create_ops(kind, [i for i in by_kind[kind] if not i.created]))
        for kind in sorted(by_kind, key=SEND_ORDER.__getitem__):
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
        size = self._config.flush_batch
        if kind is EntityKind.GRIDSQUARE:
            per_grid: dict[str | None, list[OutboxItem]] = defaultdict(list)
            for i in creates:
                per_grid[i.parent_uuid].append(i)
            return [
                self._create_batch(kind, chunk, self._gridsquares_batch(parent, chunk))
                for parent, group in per_grid.items()
                for chunk in _chunks(group, size)
            ]
        if kind is EntityKind.FOILHOLE:
            per_square: dict[str | None, list[OutboxItem]] = defaultdict(list)
            for i in creates:
                per_square[i.parent_uuid].append(i)
            return [
                self._create_batch(kind, chunk, self._foilholes_batch(parent, chunk))
                for parent, group in per_square.items()
                for chunk in _chunks(group, size)
            ]
        if kind is EntityKind.MICROGRAPH and self._micrograph_batch and len(creates) > 1:
            return [self._create_micrograph_batch(chunk) for chunk in _chunks(creates, size)]
        return [self._create_single(i) for i in creates]

    def _gridsquares_batch(
        self, grid_uuid: str | None, chunk: Sequence[OutboxItem]
    ) -> Callable[[], Awaitable[Any]]:
        reqs = [GridSquareCreateRequest.model_validate(i.payload) for i in chunk]
        return lambda: self._client.create_gridsquares_batch_request(str(grid_uuid), reqs)

    def _foilholes_batch(
        self, square_uuid: str | None, chunk: Sequence[OutboxItem]
    ) -> Callable[[], Awaitable[Any]]:
        reqs = [FoilHoleCreateRequest.model_validate(i.payload) for i in chunk]
        return lambda: self._client.create_foilholes_request(str(square_uuid), reqs)

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """One request under the concurrency bound; transport failures abort the round."""
        async with self._sem:
            self.metrics.requests += 1
            try:
                return await fn()
            except BackendUnavailableError as exc:
                self._note_unavailable(exc)
                raise _Unavailable(str(exc)) from exc

    async def _create_batch(
        self, kind: EntityKind, chunk: Sequence[OutboxItem], fn: Callable[[], Awaitable[Any]]
    ) -> int:
        try:
            await self._call(fn)
        except (ConflictError, ServerError):
            # Some of the batch already exists (restart after a lost confirmation, or lost state): sort it out
            # entity by entity, each create becoming an update where the backend already holds it.
            return await self._create_each(chunk)
        except NotFoundError:
            await self._parent_missing(chunk)
            return 0
        except RequestRejectedError:
            return await self._create_each(chunk)  # isolate the one bad row; the others go through
        await self._confirm(chunk, created=True)
        return len(chunk)

    async def _create_micrograph_batch(self, chunk: Sequence[OutboxItem]) -> int:
        reqs = [MicrographCreateRequest.model_validate(i.payload) for i in chunk]
        try:
            await self._call(lambda: self._client.create_micrographs_batch_request(reqs))
        except NotFoundError as exc:
            if "foilhole" in (exc.detail or "").lower() and self._micrograph_batch:
                await self._parent_missing(chunk)
                return 0
            # SmartEM has no micrograph batch endpoint: single posts from now on.
            if self._micrograph_batch:
                log.info("ingest.micrograph_batch_unsupported", extra={"event": "ingest.fallback"})
            self._micrograph_batch = False
            return await self._create_each(chunk)
        except (ConflictError, ServerError, RequestRejectedError):
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

    def _single_create(self, item: OutboxItem) -> Callable[[], Awaitable[Any]]:
        if item.kind is EntityKind.ATLAS_TILE:
            return self._link_tile(item)
        req = _request(item)
        c = self._client
        match item.kind:
            case EntityKind.ACQUISITION:
                return lambda: c.create_acquisition_request(req)  # type: ignore[arg-type]
            case EntityKind.GRID:
                return lambda: c.create_grid_request(req)  # type: ignore[arg-type]
            case EntityKind.ATLAS:
                return lambda: c.create_atlas_request(req)  # type: ignore[arg-type]
            case EntityKind.GRIDSQUARE:
                return lambda: c.create_gridsquare_request(req)  # type: ignore[arg-type]
            case EntityKind.FOILHOLE:
                return lambda: c.create_foilholes_request(str(item.parent_uuid), [req])  # type: ignore[list-item]
            case EntityKind.MICROGRAPH:
                return lambda: c.create_micrograph_request(req)  # type: ignore[arg-type]
        raise AssertionError(item.kind)

    def _link_tile(self, item: OutboxItem) -> Callable[[], Awaitable[Any]]:
        positions = [GridSquarePositionRequest.model_validate(p) for p in item.payload.get("positions", [])]
        return lambda: self._client.link_tile_gridsquares_request(item.uuid, positions)

    async def _create_single(self, item: OutboxItem) -> int:
        try:
            await self._call(self._single_create(item))
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
        if item.kind is EntityKind.ATLAS_TILE:
            # Tile links are one-shot on SmartEM (a repeat is an integrity error): the links are in place.
            await self._confirm([item], created=True)
            return 1
        if not known:
            try:
                await self._call(lambda: self._client.get_entity(item.kind.value, item.uuid))
            except NotFoundError:
                await self._reject([item], error or ServerError("create failed"))
                return 0
        await asyncio.to_thread(self._store.mark_exists, [item.uuid], time.time())
        return await self._send_update(item)

    # ------------------------------------------------------------------ updates

    def _single_update(self, item: OutboxItem) -> Callable[[], Awaitable[Any]] | None:
        c = self._client
        match item.kind:
            case EntityKind.ACQUISITION:
                acq = AcquisitionCreateRequest.model_validate(item.payload)
                return lambda: c.update_acquisition_request(acq)
            case EntityKind.GRID:
                grid = GridCreateRequest.model_validate(item.payload)
                return lambda: c.update_grid_request(grid)
            case EntityKind.GRIDSQUARE:
                gs = GridSquareCreateRequest.model_validate(item.payload)
                return lambda: c.update_gridsquare_request(gs)
            case EntityKind.FOILHOLE:
                fh = FoilHoleCreateRequest.model_validate(item.payload)
                return lambda: c.update_foilhole_request(fh)
            case EntityKind.MICROGRAPH:
                mic = MicrographCreateRequest.model_validate(item.payload)
                return lambda: c.update_micrograph_request(mic)
            case EntityKind.ATLAS_TILE:
                return self._link_tile(item)  # the testbed updates links in place
            case EntityKind.ATLAS:
                return None  # no atlas update in the agent's API: the atlas is created once with its tiles
        raise AssertionError(item.kind)

    async def _send_update(self, item: OutboxItem) -> int:
        fn = self._single_update(item)
        if fn is not None:
            try:
                await self._call(fn)
            except NotFoundError:
                # The backend lost it (or never had it): create it again on the next round.
                await asyncio.to_thread(self._store.mark_missing, [item.uuid], time.time())
                return 0
            except (ConflictError, ServerError) as exc:
                if item.kind is EntityKind.ATLAS_TILE:
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
