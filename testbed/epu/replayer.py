"""Replay an epuplayer-compatible recording into a folder.

* :class:`Replayer` applies events in list order with epuplayer's timing (``(ts[i] - ts[i-1]) / speed`` capped
  at ``max_delay``; burst mode sleeps 1 ms per event) and verifies content hashes.

The format itself (:class:`~testbed.epu.recording.Recording`) lives in :mod:`testbed.epu.recording`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from testbed.epu.recording import EPUEvent, Recording, RecordingError, sha256_hex

# ----------------------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """Outcome of a replay."""

    applied: int = 0
    skipped: int = 0
    hash_mismatches: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    recorded_span_s: float = 0.0

    @property
    def compression(self) -> float:
        """Recorded time span divided by replay wall time (epuplayer's "time compression")."""
        return self.recorded_span_s / self.wall_s if self.wall_s > 0 else 0.0


class Replayer:
    """Apply a recording's events to ``target_dir`` in list order, with epuplayer's timing.

    Presets as epuplayer's flags: :meth:`fast` (speed 100, max delay 1 s), :meth:`dev_mode` (burst),
    :meth:`exact`.
    """

    def __init__(
        self,
        recording: Recording,
        target_dir: str | os.PathLike[str],
        *,
        speed: float = 1.0,
        max_delay: float | None = None,
        burst: bool = False,
        verify: bool = True,
        skip_unreadable: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.recording = recording
        self.target = Path(target_dir)
        self.speed = speed
        self.max_delay = max_delay
        self.burst = burst
        self.verify = verify
        self.skip_unreadable = skip_unreadable
        self._sleep = sleep
        self._placeholders: set[Path] = set()

    @classmethod
    def fast(cls, recording: Recording, target_dir: str | os.PathLike[str]) -> Replayer:
        """epuplayer's default/``--fast``: speed 100, gaps capped at 1 s."""
        return cls(recording, target_dir, speed=100.0, max_delay=1.0)

    @classmethod
    def dev_mode(cls, recording: Recording, target_dir: str | os.PathLike[str]) -> Replayer:
        """epuplayer's ``--dev-mode``: burst, about 1 ms per event."""
        return cls(recording, target_dir, speed=1000.0, max_delay=0.1, burst=True)

    @classmethod
    def exact(cls, recording: Recording, target_dir: str | os.PathLike[str]) -> Replayer:
        """epuplayer's ``--exact``: real time."""
        return cls(recording, target_dir, speed=1.0, max_delay=None)

    def _delay(self, previous: EPUEvent | None, event: EPUEvent) -> float:
        if self.burst:
            return 0.001
        if previous is None:
            return 0.0
        delay = (event.timestamp - previous.timestamp) / self.speed
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return delay if delay > 0.001 else 0.0

    def replay(self, on_event: Callable[[int, EPUEvent], None] | None = None) -> ReplayResult:
        """Apply every event; returns counts, warnings and hash mismatches. Raises :class:`RecordingError` on
        an
        event that cannot be applied (a path escaping the target, a missing source to move)."""
        self.target.mkdir(parents=True, exist_ok=True)
        result = ReplayResult(skipped=self.recording.skipped_events, warnings=list(self.recording.warnings))
        events = self.recording.events
        if events:
            result.recorded_span_s = events[-1].timestamp - events[0].timestamp
        started = time.monotonic()
        previous: EPUEvent | None = None
        for index, event in enumerate(events):
            delay = self._delay(previous, event)
            if delay > 0:
                self._sleep(delay)
            previous = event
            if self.skip_unreadable and (event.content_hash or "").startswith("unreadable_"):
                result.skipped += 1
                continue
            self._apply(event, result)
            result.applied += 1
            if on_event is not None:
                on_event(index, event)
        result.wall_s = time.monotonic() - started
        return result

    def _path(self, rel: str) -> Path:
        """The target path of a recorded path; ``.`` (the recorded folder itself) is the replay folder."""
        text = rel.replace("\\", "/")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(rel).drive:
            raise RecordingError(f"event path {rel!r} escapes the replay folder")
        # PurePosixPath drops "." components: "." and "./" name the folder itself, "a/./b" is "a/b".
        parts = PurePosixPath(text).parts
        if ".." in parts:
            raise RecordingError(f"event path {rel!r} escapes the replay folder")
        return self.target.joinpath(*parts)

    def _content(self, event: EPUEvent) -> bytes:
        if event.is_placeholder:
            return b"\x00" * (event.size or 0)
        if event.binary_chunk_id is not None:
            return self.recording.chunks[event.binary_chunk_id]
        return (event.content or "").encode("utf-8")

    def _apply(self, event: EPUEvent, result: ReplayResult) -> None:
        path = self._path(event.src_path)
        kind = event.event_type
        if path == self.target and kind in ("deleted", "moved"):
            # The recorded folder itself went away or was renamed: the replay folder stays where it was asked.
            result.warnings.append(f"{kind} event on the recorded folder itself not applied")
            return
        if path == self.target and not event.is_directory:
            raise RecordingError(f"file event on the recorded folder itself ({event.src_path!r})")
        if event.is_directory:
            if kind in ("initial_dir", "created"):
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "deleted":
                shutil.rmtree(path, ignore_errors=True)
            elif kind == "moved" and event.dest_path is not None:
                if path.exists():
                    self._move(path, self._path(event.dest_path))
                else:
                    result.warnings.append(
                        f"{event.src_path}/: moved to {event.dest_path} but never recorded"
                    )
            return
        if kind in ("initial_file", "created", "modified"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._content(event))
            times = event.operation_data or {}
            if "mtime" in times:
                os.utime(path, (float(times.get("atime", times["mtime"])), float(times["mtime"])))
        elif kind == "appended":
            path.parent.mkdir(parents=True, exist_ok=True)
            current = path.stat().st_size if path.exists() else 0
            if event.file_position is not None and current != event.file_position:
                result.warnings.append(
                    f"{event.src_path}: size {current} != append position {event.file_position}"
                )
            with open(path, "ab") as handle:
                handle.write(self._content(event))
        elif kind == "truncated":
            new_size = int((event.operation_data or {}).get("new_size", event.size or 0))
            with open(path, "r+b") as handle:
                handle.truncate(new_size)
        elif kind == "deleted":
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        elif kind == "moved":
            if event.dest_path is None:
                raise RecordingError(f"moved event without dest_path: {event.src_path}")
            dest = self._path(event.dest_path)
            if not path.exists():
                # A recorder that reads files lazily (epuplayer's) misses a file renamed before it looked: it
                # records the move but not the file. Replayed as epuplayer does: nothing to move.
                result.warnings.append(f"{event.src_path}: moved to {event.dest_path} but never recorded")
                return
            self._move(path, dest)
            path = dest
        if kind in ("initial_file", "created", "modified"):
            if event.is_placeholder:
                self._placeholders.add(path)
            else:
                self._placeholders.discard(path)
        elif kind == "deleted":
            self._placeholders.discard(path)
        elif kind == "moved" and event.dest_path is not None:
            source = self._path(event.src_path)
            if source in self._placeholders:
                self._placeholders.discard(source)
                self._placeholders.add(path)
            else:
                self._placeholders.discard(path)
        # A placeholder stands for bytes the recording left out (zeros of the recorded size): its hash is the
        # original's and cannot match, nor can that of a file appended to after it.
        checkable = (
            bool(event.content_hash)
            and not str(event.content_hash).startswith("unreadable_")
            and path not in self._placeholders
        )
        if (
            self.verify
            and checkable
            and path.is_file()
            and sha256_hex(path.read_bytes()) != event.content_hash
        ):
            result.hash_mismatches.append(event.dest_path or event.src_path)

    @staticmethod
    def _move(source: Path, dest: Path) -> None:
        if not source.exists():
            raise RecordingError(f"cannot move {source}: it does not exist")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(dest))


__all__ = ["ReplayResult", "Replayer"]
