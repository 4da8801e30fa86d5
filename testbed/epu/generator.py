"""Write a synthetic EPU visit into a folder, progressively, as EPU would.

:func:`generate` is the one-call form; :class:`SessionGenerator` gives the incremental forms:
:meth:`~SessionGenerator.iter_writes` (a blocking iterator, one file per step, so tests can interleave checks)
and :meth:`~SessionGenerator.run_async` (for the demo, which writes over 15-30 s while the agent runs in the
same event loop).

Behaviours reproduced from epu-format.md section 8.2:

* **Timing**: ``fast`` (no pauses), ``realtime`` (EPU cadence: micrographs 3-4 s apart), ``accelerated`` (the
  same cadence divided by ``speed``, or fitted to ``duration_s``), ``bursts`` (files buffered and dumped in
  groups of up to ``burst_size``, pausing between groups as the accelerated cadence would).
* **Rewrites**: ``EpuSession.dm`` is rewritten as squares complete (the last time with ``EndDateTime``); a
  square's ``Metadata/GridSquare_<id>.dm`` grows from a hole-less file to one with holes, then to the final
  one with images and micrographs. Rewrites are full new versions, written in place (or by rename, see
  ``rename_writes``).
* **Disorder**: with probability ``disorder`` a file is written just before its parent (a grid-square ``.dm``
  before ``EpuSession.dm``, a foil-hole image before the ``.dm`` that lists the hole, a micrograph before its
  foil-hole image, a preview before its XML).
* **Partial writes**: with probability ``partial_writes`` a text file is written in ``partial_chunks`` chunks
  with ``partial_pause_s`` between them, so a watcher can observe a truncated file.

The manifest (:mod:`testbed.epu.manifest`) is written first, atomically, as ``<out>/manifest.json``.

This module schedules and performs the writes; the op list (and its disorder) comes from
:mod:`testbed.epu.file_ops`, the manifest from :mod:`testbed.epu.manifest_builder`.
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from testbed.epu.file_ops import FileOp, apply_disorder, build_ops
from testbed.epu.manifest import MANIFEST_NAME, Manifest
from testbed.epu.manifest_builder import build_manifest
from testbed.epu.planner import plan_session


class TimingMode(enum.StrEnum):
    """How the generator paces its writes."""

    FAST = "fast"
    REALTIME = "realtime"
    ACCELERATED = "accelerated"
    BURSTS = "bursts"


class GeneratorConfig(BaseModel):
    """Options of :class:`SessionGenerator` (all have working defaults: ``small``, seed 0, fast)."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "small"
    """``small`` (demo size), ``medium`` (about 10k files) or ``large`` (about 100k files)."""
    seed: int = 0
    grids: int | None = None
    """Number of grids (EPU sessions); ``None`` = the preset's default."""
    timing: TimingMode = TimingMode.FAST
    speed: float = Field(default=10.0, gt=0)
    """``accelerated``/``bursts``: virtual seconds per wall-clock second."""
    duration_s: float | None = Field(default=None, gt=0)
    """``accelerated``/``bursts``: fit the whole visit into about this many seconds (overrides ``speed``)."""
    max_delay_s: float | None = Field(default=None, ge=0)
    """Cap on any single pause (like epuplayer's ``--max-delay``)."""
    burst_size: int = Field(default=200, ge=1)
    disorder: float = Field(default=0.0, ge=0, le=1)
    partial_writes: float = Field(default=0.0, ge=0, le=1)
    partial_chunks: int = Field(default=3, ge=2)
    partial_pause_s: float = Field(default=0.05, ge=0)
    rename_writes: float = Field(default=0.0, ge=0, le=1)
    """Probability that a file is written to a temporary name and renamed into place (a ``moved`` event)."""
    rename_rewrites: bool = False
    """Write every rewrite of an existing file (``EpuSession.dm``, grid-square ``.dm``) by rename, never in place.
    A watcher that diffs sizes (epuplayer's recorder) mistakes an in-place rewrite for an append or a truncation."""
    rename_pause_s: float = Field(default=0.0, ge=0)
    """Pause between finishing a temporary file and renaming it into place. A watcher that reads each file
    when its event arrives (epuplayer's recorder) loses a file renamed before it looked; this gives it time."""
    previews: bool = True
    """Write a JPEG preview next to every image XML, as EPU does."""
    storage_windows: str | None = None
    """Windows storage folder written into the files; default ``Z:\\<output folder name>``."""
    label: str = "testbed"
    write_manifest: bool = True


@dataclass(slots=True, frozen=True)
class WriteEvent:
    """What one step of the generator did."""

    index: int
    total: int
    rel_path: str
    kind: str
    size: int
    at: float
    """Virtual time of the write (seconds from the start of the visit)."""
    rewrite: bool
    partial: bool
    renamed: bool


def _write_chunk(path: Path, chunk: bytes, *, append: bool) -> None:
    """Write one chunk: the first truncates (a rewrite starts empty, as an in-place save does), later ones
    append. Each chunk is closed, so a reader sees exactly the bytes written so far."""
    with open(path, "ab" if append else "wb") as handle:
        handle.write(chunk)


class SessionGenerator:
    """Plans a visit at construction; writes it with :meth:`run`, :meth:`iter_writes` or :meth:`run_async`.

    ``out_dir`` plays the EPU storage folder; it is created if missing. The plan, the op list and the manifest
    are available before anything is written.
    """

    def __init__(self, out_dir: str | os.PathLike[str], config: GeneratorConfig | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.config = config or GeneratorConfig()
        storage = self.config.storage_windows or f"Z:\\{self.out_dir.resolve().name or 'epu'}"
        self.plan = plan_session(
            preset=self.config.preset,
            seed=self.config.seed,
            grids=self.config.grids,
            storage_windows=storage,
            label=self.config.label,
        )
        # Separate random streams: content depends only on (preset, seed, grids); order and write style on the
        # rest.
        self._rng = random.Random(f"epu-testbed-writes/{self.config.seed}")
        self.ops = apply_disorder(
            build_ops(self.plan, previews=self.config.previews), self.config.disorder, self._rng
        )
        self.manifest = build_manifest(self.plan, self.ops)
        self._written = 0

    @property
    def total(self) -> int:
        """Number of write operations (file versions, rewrites included)."""
        return len(self.ops)

    @property
    def virtual_span_s(self) -> float:
        """Virtual duration of the visit: seconds between the first and the last write."""
        if not self.ops:
            return 0.0
        times = [op.at for op in self.ops]
        return max(times) - min(times)

    def _speed(self) -> float:
        if self.config.duration_s is not None and self.virtual_span_s > 0:
            return self.virtual_span_s / self.config.duration_s
        return self.config.speed

    def _delays(self) -> list[float]:
        """Wall-clock pause before each op."""
        mode = self.config.timing
        n = len(self.ops)
        if mode is TimingMode.FAST or n == 0:
            return [0.0] * n
        divisor = 1.0 if mode is TimingMode.REALTIME else self._speed()
        delays = [0.0]
        for prev, op in zip(self.ops, self.ops[1:], strict=False):
            delays.append(max(0.0, op.at - prev.at) / divisor)
        if mode is TimingMode.BURSTS:
            # Buffer: no pause inside a burst; the burst's accumulated time is paid once before it.
            grouped: list[float] = []
            i = 0
            while i < n:
                size = self._rng.randint(max(1, self.config.burst_size // 4), self.config.burst_size)
                chunk = delays[i : i + size]
                grouped.append(sum(chunk))
                grouped.extend([0.0] * (len(chunk) - 1))
                i += size
            delays = grouped
        cap = self.config.max_delay_s
        return [min(d, cap) if cap is not None else d for d in delays]

    def _prepare(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.config.write_manifest:
            self.manifest.write(self.out_dir / MANIFEST_NAME)

    def _plan_write(self, op: FileOp) -> tuple[bytes, list[bytes], bool]:
        """Content, its chunks (one unless partial) and whether to write by rename."""
        data = op.render()
        partial_write = op.kind != "jpg" and self._rng.random() < self.config.partial_writes
        renamed = self._rng.random() < self.config.rename_writes or (
            op.rewrite and self.config.rename_rewrites
        )
        if partial_write and len(data) > self.config.partial_chunks:
            step = -(-len(data) // self.config.partial_chunks)
            chunks = [data[i : i + step] for i in range(0, len(data), step)]
        else:
            chunks = [data]
        return data, chunks, renamed

    def _event(self, index: int, op: FileOp, data: bytes, chunks: list[bytes], renamed: bool) -> WriteEvent:
        return WriteEvent(
            index=index,
            total=len(self.ops),
            rel_path=op.rel_path,
            kind=op.kind,
            size=len(data),
            at=op.at,
            rewrite=op.rewrite,
            partial=len(chunks) > 1,
            renamed=renamed,
        )

    def _target(self, op: FileOp) -> Path:
        target = self.out_dir.joinpath(*PurePosixPath(op.rel_path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def iter_writes(self) -> Iterator[WriteEvent]:
        """Write the visit, one file version per step, sleeping as the timing mode says (blocking)."""
        self._prepare()
        for index, (op, delay) in enumerate(zip(self.ops, self._delays(), strict=True)):
            if delay > 0.001:
                time.sleep(delay)
            data, chunks, renamed = self._plan_write(op)
            target = self._target(op)
            path = target.with_name(f".{target.name}.part") if renamed else target
            for k, chunk in enumerate(chunks):
                if k:
                    time.sleep(self.config.partial_pause_s)
                _write_chunk(path, chunk, append=k > 0)
            if renamed:
                if self.config.rename_pause_s:
                    time.sleep(self.config.rename_pause_s)
                path.replace(target)
            self._written += 1
            yield self._event(index, op, data, chunks, renamed)

    async def aiter_writes(self) -> AsyncIterator[WriteEvent]:
        """Like :meth:`iter_writes` but pausing with ``asyncio.sleep`` (file I/O is small and synchronous)."""
        await asyncio.to_thread(self._prepare)
        for index, (op, delay) in enumerate(zip(self.ops, self._delays(), strict=True)):
            if delay > 0.001:
                await asyncio.sleep(delay)
            data, chunks, renamed = self._plan_write(op)
            target = self._target(op)
            path = target.with_name(f".{target.name}.part") if renamed else target
            for k, chunk in enumerate(chunks):
                if k:
                    await asyncio.sleep(self.config.partial_pause_s)
                _write_chunk(path, chunk, append=k > 0)
            if renamed:
                if self.config.rename_pause_s:
                    await asyncio.sleep(self.config.rename_pause_s)
                path.replace(target)
            self._written += 1
            yield self._event(index, op, data, chunks, renamed)

    def write_final(self, select: Callable[[FileOp], bool] | None = None) -> list[Path]:
        """Write the final version of each file (or of those ``select`` accepts) at once, in write order.

        For tests and tools that need the end state of a big preset, or a sample of it, without its history.
        """
        self._prepare()
        final: dict[str, FileOp] = {}
        for op in self.ops:
            final[op.rel_path] = op  # later versions replace earlier ones; dict keeps first-write order
        written: list[Path] = []
        for op in final.values():
            if select is not None and not select(op):
                continue
            target = self._target(op)
            target.write_bytes(op.render())
            written.append(target)
        return written

    def run(self, on_write: Callable[[WriteEvent], None] | None = None) -> Manifest:
        """Write everything (blocking) and return the manifest."""
        for event in self.iter_writes():
            if on_write is not None:
                on_write(event)
        return self.manifest

    async def run_async(
        self, on_write: Callable[[WriteEvent], Awaitable[None] | None] | None = None
    ) -> Manifest:
        """Write everything without blocking the event loop between files; return the manifest."""
        async for event in self.aiter_writes():
            if on_write is not None:
                result = on_write(event)
                if isinstance(result, Awaitable):
                    await result
        return self.manifest


def generate(
    out_dir: str | os.PathLike[str],
    *,
    preset: str = "small",
    seed: int = 0,
    grids: int | None = None,
    timing: TimingMode | str = TimingMode.FAST,
    speed: float = 10.0,
    duration_s: float | None = None,
    max_delay_s: float | None = None,
    disorder: float = 0.0,
    partial_writes: float = 0.0,
    rename_writes: float = 0.0,
    rename_pause_s: float = 0.0,
    previews: bool = True,
    on_write: Callable[[WriteEvent], None] | None = None,
) -> Manifest:
    """Write a synthetic EPU visit into ``out_dir``; return its manifest (also in ``manifest.json``)."""
    config = GeneratorConfig(
        preset=preset,
        seed=seed,
        grids=grids,
        timing=TimingMode(timing),
        speed=speed,
        duration_s=duration_s,
        max_delay_s=max_delay_s,
        disorder=disorder,
        partial_writes=partial_writes,
        rename_writes=rename_writes,
        rename_pause_s=rename_pause_s,
        previews=previews,
    )
    return SessionGenerator(out_dir, config).run(on_write)


__all__ = [
    "GeneratorConfig",
    "SessionGenerator",
    "TimingMode",
    "WriteEvent",
    "generate",
]
