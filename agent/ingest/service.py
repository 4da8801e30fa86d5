"""``IngestService``: watcher -> settler -> parsers -> state (contributions, outbox) -> flusher -> backend.

Data flow and the guarantees each step gives:

* The watcher (observer started before the start-up scan) reports paths; names that are not EPU files are
  dropped by :func:`converters.paths.classify_path` without touching the disk.
* The settler holds at most ``queue_size`` paths; beyond that, paths are parked in the state database and read
  back as room frees up (bounded memory, nothing dropped).
* Parsers run in worker threads. A file whose size and mtime, or else whose content hash, match the last
  processed version is skipped. An incomplete parse goes back to the settler with a growing delay.
* One committer writes the results of many files in one transaction: the file record, the merged entities and
  their outbox rows commit together, so a crash can lose only work that is redone on restart (the scan finds
  every file whose record is missing or stale).
* The flusher sends the outbox, parents first (see :mod:`agent.ingest.flusher`).
* A child whose parent's own file has not appeared within ``parent_wait_s`` (at once after the start-up scan with
  ``synthesize_when_scanned``) gets a minimal parent built from its path (:meth:`IngestStore.synthesize_parents`),
  logged once (``ingest.parent_synthesized``) and counted in ``agent.status``; the parent's file, if it comes
  later, completes the same entity (``ingest.parent_completed``).

A path is never parsed twice at the same time: an event for a path in flight is replayed after it committed,
so an older parse can never overwrite a newer one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.ingest.config import IngestConfig
from agent.ingest.entities import ContributionBuilder
from agent.ingest.flusher import IngestClient, OutboxFlusher
from agent.ingest.parsing import Outcome, ParseBatch, ParseJob, Ready, parse_batch, parse_jobs, warm_up
from agent.ingest.reporting import IngestMetrics, IngestReporting
from agent.ingest.settle import Settler
from agent.ingest.store import IngestStore, OutboxItem
from agent.ingest.watcher import FileWatcher
from agent.state.database import Database
from converters.paths import PathMap, classify_path

log = logging.getLogger(__name__)


class IngestService(IngestReporting):
    """The ingest pipeline as one long-running service with ``start()`` / ``stop()``.

    Args:
        config: the ingest settings.
        db: the agent's state database (the ingest tables are created if missing).
        client: the backend client (``AsyncSmartEMAPIClient`` or anything with the same request-model level
            methods); ``None`` parses and records without sending (dry run).
    """

    def __init__(self, config: IngestConfig, db: Database, client: IngestClient | None) -> None:
        self.config = config
        self.db = db
        self.client = client
        self.store = IngestStore(db)
        self.builder = ContributionBuilder(
            config.watch_dir, skip_near_grid_bar_holes=config.skip_near_grid_bar_holes
        )
        self.path_map = PathMap(dict(config.path_map)) if config.path_map else None
        self.settler = Settler(
            settle_time_s=config.settle_time_s,
            retry_initial_s=config.incomplete_retry_s,
            retry_max_s=config.incomplete_retry_max_s,
            capacity=config.queue_size,
        )
        self.metrics = IngestMetrics()
        self.flusher = (
            OutboxFlusher(config, self.store, client, on_confirmed=self._confirmed)
            if client is not None
            else None
        )
        self.watcher = FileWatcher(
            Path(config.watch_dir),
            self._on_file,
            mode=config.observer,
            poll_interval_s=config.poll_interval_s,
        )
        # Enough batches in flight to keep every worker process busy while results are committed.
        self._parse_tasks = config.parse_workers + 2 * config.parse_processes
        self._parse_queue: asyncio.Queue[list[Ready]] = asyncio.Queue(maxsize=self._parse_tasks)
        self._commit_queue: asyncio.Queue[list[Outcome]] = asyncio.Queue(maxsize=2 * self._parse_tasks)
        self._inflight: set[str] = set()
        self._again: set[str] = set()
        self._spill_buffer: list[str] = []
        self._spilled = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._changed = asyncio.Event()
        self._confirm_listeners: list[Callable[[Sequence[OutboxItem]], None]] = []
        self._running = False
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        # Whether the parents missing after the start-up scan have been built (with synthesize_when_scanned).
        self._scan_synthesized = not (config.synthesize_parents and config.synthesize_when_scanned)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start watching (observer first, then the start-up scan), parsing, committing and flushing."""
        if self._running:
            return
        self._running = True
        self._spilled = await asyncio.to_thread(self.store.spilled)
        if self.config.parse_processes:
            # spawn, not fork: forking a process that runs threads (observer, SQLite, HTTP) can deadlock.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.config.parse_processes, mp_context=multiprocessing.get_context("spawn")
            )
            await self._warm_pool(self._pool)
        await self.watcher.start()
        spawn = asyncio.create_task
        self._tasks = [
            spawn(self._settle_loop(), name="ingest-settle"),
            *(spawn(self._parse_worker(), name=f"ingest-parse-{i}") for i in range(self._parse_tasks)),
            spawn(self._commit_loop(), name="ingest-commit"),
            spawn(self._status_loop(), name="ingest-status"),
            spawn(self._scan(), name="ingest-scan"),
        ]
        if self.config.synthesize_parents:
            self._tasks.append(spawn(self._synthesis_loop(), name="ingest-synthesize"))
        if self.flusher is not None:
            self._tasks.append(spawn(self._run_flusher(self.flusher), name="ingest-flush"))
        log.info("ingest.started", extra={"event": "ingest.started", "watch_dir": str(self.config.watch_dir)})

    async def _warm_pool(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Start every parser process now: spawning one takes a second or more (imports), which would otherwise
        delay the first files of a live session. Submitted together, each task needs a process of its own."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(loop.run_in_executor(pool, warm_up) for _ in range(self.config.parse_processes))
            )
        except (concurrent.futures.BrokenExecutor, RuntimeError, OSError) as exc:
            # Worker processes cannot run here (e.g. a frozen app without freeze_support): use threads.
            log.warning(
                "ingest.parse_pool_failed", extra={"event": "ingest.parse_pool_failed", "error": str(exc)}
            )
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)

    async def stop(self) -> None:
        """Stop watching, let parsed work reach the database, flush what the backend takes within the bound."""
        if not self._running:
            return
        self._running = False
        await self.watcher.stop()
        deadline = time.monotonic() + self.config.drain_timeout_s
        # Results already parsed are committed (cheap, local); then the flusher gets the rest of the bound.
        while (self._commit_queue.qsize() or self._inflight) and time.monotonic() < deadline:
            await self._wait_changed(0.02)
        if self.flusher is not None:
            while time.monotonic() < deadline and await self._sendable_now():
                await self._wait_changed(0.05)
        await self._flush_spill_buffer()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        log.info("ingest.stopped", extra={"event": "ingest.stopped", **self.snapshot()})

    async def __aenter__(self) -> IngestService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ discovery

    def _on_file(self, path: str) -> None:
        """Called on the loop for every event and scanned file: classify by name, hand to the settler."""
        if classify_path(path) is None:
            self.metrics.files_ignored += 1
            return
        self.metrics.files_seen += 1
        self.submit(path)

    def submit(self, path: str) -> None:
        """Queue one EPU file (also used for an atlas outside the watched folder)."""
        if path in self._inflight:
            self._again.add(path)
        elif not self.settler.offer(path):
            self._spill_buffer.append(path)
        self._changed.set()

    async def _run_flusher(self, flusher: OutboxFlusher) -> None:
        if self.config.hold_flush_until_scanned:
            while self.pipeline_busy():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.2)
        await flusher.run()

    async def _scan(self) -> None:
        try:
            self.metrics.scanned_files = await self.watcher.scan()
        except Exception as exc:  # a scan failure must not kill the service; live events still flow
            self._note_error(f"start-up scan failed: {exc}")
            log.exception("ingest.scan_failed", extra={"event": "ingest.scan_failed"})
        finally:
            self.metrics.scan_done = True
            self._changed.set()

    async def _flush_spill_buffer(self) -> None:
        if self._spill_buffer:
            paths, self._spill_buffer = self._spill_buffer, []
            await asyncio.to_thread(self.store.spill, paths, time.time())
            self._spilled += len(paths)

    async def _settle_loop(self) -> None:
        while True:
            await self._flush_spill_buffer()
            if self._spilled and self.settler.has_room:
                room = self.settler.capacity - len(self.settler)
                back = await asyncio.to_thread(self.store.unspill, room)
                self._spilled = max(0, self._spilled - len(back)) if back else 0
                for path in back:
                    if not self.settler.offer(path):
                        self._spill_buffer.append(path)
            ready: list[Ready] = []
            for item in self.settler.poll_stat(limit=self.config.parse_batch * self._parse_tasks):
                path = item[0]
                if path in self._inflight:
                    self._again.add(path)
                    continue
                self._inflight.add(path)
                ready.append(item)
            # Spread what is ready over the parsers (latency of a live trickle), in batches of at most
            # parse_batch paths (throughput of a backlog).
            size = min(self.config.parse_batch, max(1, -(-len(ready) // self._parse_tasks)))
            for i in range(0, len(ready), size):
                await self._parse_queue.put(ready[i : i + size])
            self._changed.set()
            await self.settler.wait(0.2 if self._spilled or self._spill_buffer else 1.0)

    # ------------------------------------------------------------------ parsing

    async def _parse_worker(self) -> None:
        while True:
            ready = await self._parse_queue.get()
            try:
                outcomes = await self._process_batch(ready)
            except Exception as exc:  # never lose a path: report and retry later
                log.exception("ingest.process_failed", extra={"event": "ingest.process_failed"})
                error = f"{type(exc).__name__}: {exc}"
                outcomes = [Outcome(path=path, incomplete=True, error=error) for path, _, _ in ready]
            await self._commit_queue.put(outcomes)

    def _prepare(self, ready: Sequence[Ready]) -> tuple[list[Outcome], list[ParseJob]]:
        """Cheap checks before parsing (worker thread): files unchanged by size and mtime need no parse.

        Returns the outcomes of the files with nothing to parse and the jobs of the others (with the content
        hash of their last processed version). One query serves the whole batch.
        """
        records = self.store.file_records([path for path, _, _ in ready])
        done: list[Outcome] = []
        jobs: list[ParseJob] = []
        for path, size, mtime_ns in ready:
            info = classify_path(path)
            if info is None:
                done.append(Outcome(path=path, skipped=True))
                continue
            previous = records.get(path)
            if previous is not None and previous[:2] == (size, mtime_ns) and previous[3] == "done":
                done.append(Outcome(path=path, info=info, skipped=True))
                continue
            jobs.append(ParseJob(path, None if previous is None else previous[2]))
        return done, jobs

    async def _process_batch(self, ready: Sequence[Ready]) -> list[Outcome]:
        outcomes, jobs = await asyncio.to_thread(self._prepare, ready)
        if not jobs:
            return outcomes
        if self._pool is not None:
            batch = ParseBatch(
                jobs=tuple(jobs),
                watch_root=str(self.config.watch_dir),
                skip_near_grid_bar_holes=self.config.skip_near_grid_bar_holes,
                path_map=tuple(sorted((k, str(v)) for k, v in self.config.path_map.items())),
                max_bytes=self.config.max_file_bytes,
            )
            loop = asyncio.get_running_loop()
            try:
                return outcomes + await loop.run_in_executor(self._pool, parse_batch, batch)
            except (concurrent.futures.BrokenExecutor, RuntimeError) as exc:
                # Worker processes cannot run here (e.g. a frozen app without freeze_support): use threads.
                log.warning(
                    "ingest.parse_pool_failed", extra={"event": "ingest.parse_pool_failed", "error": str(exc)}
                )
                pool, self._pool = self._pool, None
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
        parsed = await asyncio.to_thread(
            parse_jobs, jobs, self.builder, self.path_map, self.config.max_file_bytes
        )
        return outcomes + parsed

    # ------------------------------------------------------------------ committing

    async def _commit_loop(self) -> None:
        while True:
            batch = await self._commit_queue.get()
            while len(batch) < self.config.commit_batch and not self._commit_queue.empty():
                batch.extend(self._commit_queue.get_nowait())
            try:
                fetch = await asyncio.to_thread(self._commit, batch)
            except Exception as exc:
                # The transaction rolled back: put every path back so nothing is lost.
                self._note_error(f"state commit failed: {exc}")
                log.exception("ingest.commit_failed", extra={"event": "ingest.commit_failed"})
                for outcome in batch:
                    self._inflight.discard(outcome.path)
                    self.settler.retry_later(outcome.path)
                continue
            for outcome in batch:
                self._after_commit(outcome)
            for atlas_path in fetch:
                self.submit(atlas_path)
            if self.flusher is not None:
                self.flusher.wake()
            self._changed.set()

    def _commit(self, batch: Sequence[Outcome]) -> list[str]:
        """Write one batch as one unit of work (:meth:`IngestStore.commit`); returns atlas files to read that
        nobody watches."""
        result = self.store.commit(batch, self.builder.renderer, time.time())
        self.metrics.entities_enqueued += result.enqueued
        self.metrics.commits += 1
        # Logged once committed: a synthesized parent whose own file has now arrived (once per entity).
        for done in result.completed:
            self.metrics.parents_completed += 1
            log.info(
                "ingest.parent_completed",
                extra={
                    "event": "ingest.parent_completed",
                    "kind": done.kind.value,
                    "natural_id": done.natural_id,
                    "acquisition_key": done.acq_key,
                    "uuid": done.uuid,
                    "source": done.source,
                },
            )
        return result.fetch

    # ------------------------------------------------------------------ synthesized parents

    async def _synthesis_loop(self) -> None:
        """Build the parents that children have waited for too long (see :meth:`IngestStore.synthesize_parents`)."""
        if not self._scan_synthesized:
            # A backlog import: once every file found by the scan is in the database, nothing else will come.
            while self._files_busy():
                await self._wait_changed(0.2)
            await self.synthesize_now(time.time())
            self._scan_synthesized = True
            self._changed.set()
        period = max(0.2, min(5.0, self.config.parent_wait_s / 4))
        while True:
            await asyncio.sleep(period)
            await self.synthesize_now(time.time() - self.config.parent_wait_s)

    async def synthesize_now(self, cutoff: float) -> int:
        """Build the missing parents of the orphans first seen at or before ``cutoff``; returns how many."""
        try:
            made = await asyncio.to_thread(
                self.store.synthesize_parents,
                cutoff,
                self.builder.parent_builder,
                self.builder.renderer,
                time.time(),
            )
        except Exception as exc:  # the orphans stay and are tried again next period
            self._note_error(f"building missing parents failed: {exc}")
            log.exception("ingest.synthesize_failed", extra={"event": "ingest.synthesize_failed"})
            return 0
        for built in made:
            # Once per entity: a synthesized parent exists from now on, so it is never built again.
            log.info(
                "ingest.parent_synthesized",
                extra={
                    "event": "ingest.parent_synthesized",
                    "kind": built.kind.value,
                    "natural_id": built.natural_id,
                    "acquisition_key": built.acq_key,
                    "uuid": built.uuid,
                },
            )
        if made:
            self.metrics.parents_synthesized += len(made)
            if self.flusher is not None:
                self.flusher.wake()
            self._changed.set()
        return len(made)

    def _after_commit(self, outcome: Outcome) -> None:
        path = outcome.path
        self._inflight.discard(path)
        if outcome.incomplete:
            self.metrics.incomplete_retries += 1
            self.settler.retry_later(path)
        else:
            self.settler.succeeded(path)
            if outcome.error is not None:
                self.metrics.files_failed += 1
                self._note_error(outcome.error)
                log.warning(
                    "ingest.file_failed",
                    extra={"event": "ingest.file_failed", "path": path, "error": outcome.error},
                )
            elif outcome.skipped:
                self.metrics.files_unchanged += 1
            else:
                self.metrics.files_processed += 1
                if outcome.info is not None:
                    self.metrics.by_kind[outcome.info.kind.value] += 1
        if path in self._again:
            self._again.discard(path)
            self.submit(path)

    def _confirmed(self, items: Sequence[OutboxItem]) -> None:
        self._changed.set()
        for listener in self._confirm_listeners:
            listener(items)

    def add_confirm_listener(self, listener: Callable[[Sequence[OutboxItem]], None]) -> None:
        """Call ``listener`` (on the event loop) with the outbox items each time the backend confirms some."""
        self._confirm_listeners.append(listener)

    # ------------------------------------------------------------------ idle / once

    async def _wait_changed(self, at_most_s: float) -> None:
        """Sleep until the pipeline reports a change (commit, confirmation, scan end) or ``at_most_s``."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), at_most_s)

    async def _sendable_now(self) -> bool:
        rows = await asyncio.to_thread(self.store.sendable, 1, time.time())
        return bool(rows)

    def pipeline_busy(self) -> bool:
        """Whether files are still waiting, being parsed or being committed, or the parents missing after the
        start-up scan are still to be built."""
        return self._files_busy() or not self._scan_synthesized

    def _files_busy(self) -> bool:
        return bool(
            not self.metrics.scan_done
            or len(self.settler) - self.settler.retrying > 0
            or self._spilled
            or self._spill_buffer
            or self._inflight
            or self._parse_queue.qsize()
            or self._commit_queue.qsize()
        )

    async def wait_until_posted(self, *, timeout_s: float | None = None, quiet_s: float = 1.0) -> bool:
        """Wait until every discovered file is processed and the outbox is empty.

        Returns ``True`` when everything reached the backend, ``False`` when the pipeline went quiet for
        ``quiet_s`` with rows that cannot be sent (orphans whose parents never appeared, rejected rows, files
        that stay incomplete) or when ``timeout_s`` passed.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        quiet_since: float | None = None
        while deadline is None or time.monotonic() < deadline:
            self._changed.clear()
            if self.pipeline_busy():
                # Nothing to decide until the files are processed; counting the outbox (a full scan of the
                # table) on every commit of a backlog would only compete with the committer.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.1)
                continue
            depth = await asyncio.to_thread(self.store.outbox_depth)
            if depth == 0 and not self.settler.retrying:
                return True
            if self.flusher is None:
                return True
            # The backend down is not stuck: wait for it rather than give up.
            stuck = self.flusher.metrics.unavailable_since is None and not await self._sendable_now()
            if stuck:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet_s:
                    return False
            else:
                quiet_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.1)
        return False


__all__ = ["IngestMetrics", "IngestService"]
