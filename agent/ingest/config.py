"""Configuration of the ingest pipeline (one pydantic model, composed into the agent's ``Settings``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class IngestConfig(BaseModel):
    """Settings of :class:`agent.ingest.IngestService`; every default is usable as is.

    Times are in seconds.
    """

    model_config = ConfigDict(extra="forbid")

    watch_dir: Path = Field(
        description="Root folder to watch: one EPU session folder, or a folder holding several (a relative "
        "path is taken from the working folder and made absolute: paths sent to the backend are absolute)."
    )
    observer: Literal["auto", "native", "polling"] = Field(
        default="auto",
        description="'native' uses inotify/ReadDirectoryChangesW/FSEvents; 'polling' rescans the tree (needed on "
        "SMB/NFS shares, where native events do not arrive); 'auto' polls on network file systems only.",
    )
    poll_interval_s: float = Field(default=2.0, gt=0, description="Rescan period of the polling observer.")
    settle_time_s: float = Field(
        default=0.25, ge=0, description="A file is parsed once its size and mtime have been stable this long."
    )
    incomplete_retry_s: float = Field(
        default=0.5, gt=0, description="First delay before re-parsing a file that parsed as incomplete."
    )
    incomplete_retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Cap of the exponential re-parse delay for a file that stays incomplete.",
    )
    queue_size: int = Field(
        default=5000,
        ge=10,
        description="Most files held in memory awaiting settling/parsing; beyond it paths spill to the state "
        "database and are read back as room frees up (backpressure without an unbounded list).",
    )
    parse_workers: int = Field(default=2, ge=1, description="Files parsed concurrently.")
    parse_processes: int = Field(
        default=0,
        ge=0,
        description="Parse in this many worker processes (0: threads of this process). Processes use every "
        "core for large backlogs; threads start instantly and suffice for a live session.",
    )
    hold_flush_until_scanned: bool = Field(
        default=False,
        description="Send nothing until the start-up scan is parsed: every entity of a backlog then goes out "
        "once, complete, in batches, instead of a create followed by updates (used by 'ingest --once').",
    )
    synthesize_parents: bool = Field(
        default=True,
        description="Build a minimal parent (foil hole, grid square, grid, acquisition) from its children's paths "
        "when the parent's own file does not appear (partial or archived folders: no Metadata/, no FoilHoles/ "
        "image, no EpuSession.dm), so that every child reaches the backend. The parent's file, if it comes "
        "later, completes the same entity by an update.",
    )
    parent_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a child waits for its parent's own file before the parent is built from its path.",
    )
    synthesize_when_scanned: bool = Field(
        default=False,
        description="Build missing parents at once when the start-up scan's files are all processed, before "
        "anything is sent (a backlog import has seen the whole folder; used by 'ingest --once').",
    )
    parse_batch: int = Field(
        default=32,
        ge=1,
        description="Most files sent to a parser in one round trip (what is ready is spread over the parsers "
        "first, so a live trickle is not held back waiting for a full batch).",
    )
    commit_batch: int = Field(
        default=256, ge=1, description="Most parsed files written to the state database in one transaction."
    )
    flush_batch: int = Field(
        default=500, ge=1, le=1000, description="Most entities in one batch request (backend cap: 1000)."
    )
    flush_concurrency: int = Field(default=4, ge=1, description="Most backend requests in flight at once.")
    flush_retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before re-sending after the backend was unavailable."
    )
    flush_retry_max_s: float = Field(
        default=10.0,
        gt=0,
        description="Cap of the wait between re-sends while the backend stays unavailable.",
    )
    rejected_retry_s: float = Field(
        default=300.0,
        gt=0,
        description="Wait before re-sending an operation the backend rejected (4xx): kept, never dropped.",
    )
    status_interval_s: float = Field(
        default=30.0, gt=0, description="Period of the 'agent.status' log line while the service runs."
    )
    skip_near_grid_bar_holes: bool = Field(
        default=True,
        description="Do not create foil holes flagged near the grid bar (SmartEM's client filters them too).",
    )
    max_file_bytes: int = Field(default=256 * 1024 * 1024, gt=0, description="Refuse to parse larger files.")
    path_map: dict[str, Path] = Field(
        default_factory=dict,
        description="Windows path prefix -> local path, used to find the atlas an EpuSession.dm points to.",
    )
    drain_timeout_s: float = Field(default=10.0, ge=0, description="Bound of the flush on stop().")

    # Every path the agent sends (storage_path, data_dir, image paths, ...) is derived from these folders. A
    # relative watch folder would put paths relative to the agent's working folder on the wire, which mean
    # nothing to the backend or to processing on another machine: they are made absolute once, here.
    @field_validator("watch_dir")
    @classmethod
    def _absolute_watch_dir(cls, value: Path) -> Path:
        return value.absolute()

    @field_validator("path_map")
    @classmethod
    def _absolute_path_map(cls, value: dict[str, Path]) -> dict[str, Path]:
        return {prefix: local.absolute() for prefix, local in value.items()}


__all__ = ["IngestConfig"]
