"""What the ingest service reports: its counters, the ``agent.status`` snapshot, and the sections and findings of
the ``ingest --once`` report.

:class:`IngestReporting` is the read side of :class:`~agent.ingest.service.IngestService` (which inherits it):
it reads the service's counters and the state database, and changes nothing but the last-error note.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.ingest.config import IngestConfig
from agent.ingest.entities import ContributionBuilder
from agent.ingest.settle import Settler
from agent.ingest.store import SYNTHESIZED_WAITING, IngestStore
from agent.ingest.watcher import FileWatcher
from agent.state.database import Database
from converters.findings import Finding, no_epu_files, parents_finding, session_folder_findings

if TYPE_CHECKING:
    from agent.ingest.flusher import OutboxFlusher

log = logging.getLogger("agent.ingest.service")


@dataclass(slots=True)
class IngestMetrics:
    """Counters of the pipeline since start."""

    started_at: float = field(default_factory=time.time)
    files_seen: int = 0
    files_ignored: int = 0
    files_processed: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    incomplete_retries: int = 0
    entities_enqueued: int = 0
    commits: int = 0
    parents_synthesized: int = 0
    parents_completed: int = 0
    scan_done: bool = False
    scanned_files: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    by_kind: Counter[str] = field(default_factory=Counter)


class IngestReporting:
    """Counters, status and report sections of the ingest service (mixed into ``IngestService``)."""

    config: IngestConfig
    db: Database
    store: IngestStore
    builder: ContributionBuilder
    settler: Settler
    watcher: FileWatcher
    flusher: OutboxFlusher | None
    metrics: IngestMetrics
    _spilled: int
    _spill_buffer: list[str]

    def _note_error(self, text: str) -> None:
        self.metrics.last_error = text[:500]
        self.metrics.last_error_at = time.time()

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            snap = await asyncio.to_thread(self.snapshot)
            log.info("agent.status", extra={"event": "agent.status", **snap})

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable status: files seen, entities posted by kind, outbox depth, orphans, last error."""
        orphans = self.store.orphans()
        synthesized = self.store.synthesized_counts()
        flush = self.flusher.metrics if self.flusher is not None else None
        last_error, last_at = self.metrics.last_error, self.metrics.last_error_at
        if (
            flush is not None
            and flush.last_error_at is not None
            and (last_at is None or flush.last_error_at > last_at)
        ):
            last_error = flush.last_error
        return {
            "files_seen": self.metrics.files_seen,
            "files_processed": self.metrics.files_processed,
            "files_unchanged": self.metrics.files_unchanged,
            "files_failed": self.metrics.files_failed,
            "files_waiting": len(self.settler) + self._spilled + len(self._spill_buffer),
            "incomplete_retries": self.metrics.incomplete_retries,
            "scan_done": self.metrics.scan_done,
            "entities_posted": dict(flush.created + flush.updated) if flush is not None else {},
            "outbox_depth": self.store.outbox_depth(),
            "orphans": orphans["by_kind"],
            "oldest_orphan_age_s": orphans["oldest_age_s"],
            "parents_synthesized": {kind: c["synthesized"] for kind, c in synthesized.items()},
            "parents_completed": {kind: c["completed"] for kind, c in synthesized.items() if c["completed"]},
            "backend_available": None if flush is None else flush.unavailable_since is None,
            "last_error": last_error,
        }

    def datastore_info(self) -> dict[str, Any]:
        """State database: path, entities per kind (known/created/skipped/pending), files by status, spill."""
        return {
            "path": str(self.db.path),
            "entities": self.store.entity_counts(),
            "files": self.store.file_counts(),
            "outbox_depth": self.store.outbox_depth(),
            "spilled_paths": self._spilled,
        }

    def findings(self) -> list[Finding]:
        """What the watched folder lacks, per session folder known to the state database (no ``EpuSession.dm``,
        no ``Metadata/``, the atlas not found), and the parents built from paths that still wait for their own
        files. Reads the state database and looks at the disk: call it from a worker thread."""
        acquisitions = self.store.acquisition_fields()
        if not acquisitions and not self.metrics.files_seen:
            return [no_epu_files(self.config.watch_dir)]
        out: list[Finding] = []
        for acq, fields in sorted(acquisitions.items()):
            folder = self.builder.session_folder(acq)
            atlas_local = fields.get("atlas_local_path")
            out.extend(
                session_folder_findings(
                    folder,
                    has_session_file=fields["_synthesized"] != SYNTHESIZED_WAITING,
                    has_metadata=(folder / "Metadata").is_dir(),
                    atlas_path=fields.get("atlas_path"),
                    atlas_found=bool(atlas_local) and Path(str(atlas_local)).is_file(),
                )
            )
        waiting = {
            kind: c["synthesized"] - c["completed"] for kind, c in self.store.synthesized_counts().items()
        }
        finding = parents_finding(self.config.watch_dir, waiting, done=True)
        if finding is not None:
            out.append(finding)
        return out

    def orphan_info(self) -> dict[str, Any]:
        """Entities waiting for a parent that has not been seen: total, by kind, oldest age."""
        return self.store.orphans()

    def error_info(self) -> dict[str, Any]:
        """Last error, files that failed to parse, outbox rows that the backend refused or could not take."""
        return {
            "last_error": self.snapshot()["last_error"],
            "failed_files": self.store.failed_files(),
            "deferred_operations": self.store.deferred_errors(),
            "incomplete_files": self.settler.retrying,
        }

    def metrics_info(self) -> dict[str, Any]:
        """Pipeline and flusher counters since start."""
        m = self.metrics
        return {
            "uptime_s": round(time.time() - m.started_at, 3),
            "observer": self.watcher.observer_kind,
            "files_seen": m.files_seen,
            "files_ignored": m.files_ignored,
            "files_processed": m.files_processed,
            "files_processed_by_kind": dict(m.by_kind),
            "files_unchanged": m.files_unchanged,
            "files_failed": m.files_failed,
            "incomplete_retries": m.incomplete_retries,
            "entities_enqueued": m.entities_enqueued,
            "parents_synthesized": m.parents_synthesized,
            "parents_completed": m.parents_completed,
            "commits": m.commits,
            "flusher": None if self.flusher is None else self.flusher.metrics.snapshot(),
        }


__all__ = ["IngestMetrics", "IngestReporting"]
