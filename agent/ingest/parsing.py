"""Reading, hashing and parsing files into contributions: the part of the pipeline that runs in parser processes.

Kept apart from :mod:`agent.ingest.service` so that a parser process (``spawn`` start method) imports only the
converters and the contribution builder, not the HTTP client, the watcher or the flusher: each process then
costs less memory and starts faster.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.ingest.atlas import session_claim
from agent.ingest.entities import ContributionBuilder
from agent.ingest.records import FileRecord, Outcome
from converters.errors import ConverterError, IncompleteFileError
from converters.parse import ParsedAtlas, ParsedSession, parse_bytes
from converters.paths import PathMap, classify_path

Ready = tuple[str, int, int]
"""A settled path with the size and mtime (ns) the settler observed."""


@dataclass(frozen=True, slots=True)
class ParseJob:
    """One path to read, hash and parse, with the content hash of its last processed version; picklable."""

    path: str
    previous_hash: str | None


@dataclass(frozen=True, slots=True)
class ParseBatch:
    """Jobs for one round trip to a worker process, with the settings they share; picklable.

    Sending paths in batches amortises the cost of a round trip (pickling, pipe, wake-ups) over many files.
    """

    jobs: tuple[ParseJob, ...]
    watch_root: str
    skip_near_grid_bar_holes: bool
    path_map: tuple[tuple[str, str], ...]
    max_bytes: int


#: Per worker process: the contribution builder and path map of each watch root seen (built once, not per file).
_WORKER_CONTEXT: dict[
    tuple[str, bool, tuple[tuple[str, str], ...]], tuple[ContributionBuilder, PathMap | None]
] = {}


def parse_batch(batch: ParseBatch) -> list[Outcome]:
    """Process a batch in a worker process (module level so that it can be pickled by reference)."""
    key = (batch.watch_root, batch.skip_near_grid_bar_holes, batch.path_map)
    context = _WORKER_CONTEXT.get(key)
    if context is None:
        builder = ContributionBuilder(
            Path(batch.watch_root), skip_near_grid_bar_holes=batch.skip_near_grid_bar_holes
        )
        context = (builder, PathMap(dict(batch.path_map)) if batch.path_map else None)
        _WORKER_CONTEXT[key] = context
    return parse_jobs(batch.jobs, context[0], context[1], batch.max_bytes)


def parse_jobs(
    jobs: Sequence[ParseJob], builder: ContributionBuilder, path_map: PathMap | None, max_bytes: int
) -> list[Outcome]:
    """:func:`parse_job` for each job; an unexpected failure of one file is kept for a retry, not raised."""
    out: list[Outcome] = []
    for job in jobs:
        try:
            out.append(parse_job(job, builder, path_map, max_bytes))
        except Exception as exc:  # never lose the path: report it and look again later
            out.append(Outcome(path=job.path, incomplete=True, error=f"{type(exc).__name__}: {exc}"))
    return out


def parse_job(
    job: ParseJob, builder: ContributionBuilder, path_map: PathMap | None, max_bytes: int
) -> Outcome:
    """Read, hash and parse one file into contributions."""
    path = job.path
    info = classify_path(path)
    if info is None:
        return Outcome(path=path, skipped=True)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Outcome(path=path, info=info, skipped=True)
    digest = hashlib.sha256(data).hexdigest()
    record = FileRecord(path, info.kind.value, st.st_size, st.st_mtime_ns, digest, "done")
    if job.previous_hash == digest:
        return Outcome(path=path, info=info, record=record, skipped=True)
    try:
        parsed = parse_bytes(data, info, path_map=path_map, max_bytes=max_bytes)
    except IncompleteFileError as exc:
        return Outcome(path=path, info=info, incomplete=True, error=str(exc))
    except ConverterError as exc:
        failed = FileRecord(path, info.kind.value, st.st_size, st.st_mtime_ns, digest, "failed", str(exc))
        return Outcome(path=path, info=info, record=failed, error=str(exc))
    outcome = Outcome(path=path, info=info, record=record)
    if isinstance(parsed, ParsedAtlas):
        outcome.atlas = parsed
        return outcome
    outcome.contributions = builder.contributions_for(parsed)
    if isinstance(parsed, ParsedSession):
        outcome.atlas_claim = session_claim(builder, parsed, info)
    return outcome


def warm_up() -> int:
    """Run in a fresh parser process so that it is started (and its imports done) before the first file comes."""
    return os.getpid()


__all__ = ["Outcome", "ParseBatch", "ParseJob", "Ready", "parse_batch", "parse_job", "parse_jobs", "warm_up"]
