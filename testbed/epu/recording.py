"""epuplayer-compatible recordings: read, write, replay, and record a live folder.

Format (smartem-reference.md section 15): a gzip tar holding ``recording.json`` (``{"metadata": {...},
"events":
[...]}``, written with ``indent=2``) and ``chunks/chunk_<N>.bin`` for binary or large content. A plain JSON
file of
the same shape is the legacy form and is read too. Events carry only ``EPUEvent`` keys, so recordings made
here
replay with epuplayer and epuplayer's replay here.

* :class:`Recording` loads and saves archives. A recording from a newer or different recorder may carry event
  kinds or fields this module does not know: they are reported (:attr:`Recording.warnings`) and skipped, not
  fatal. Events on the recorded folder itself (path ``.``, as epuplayer's recorder writes for the watched
  folder's own directory events) apply to the replay folder itself.
* :class:`Replayer` applies events in list order with epuplayer's timing (``(ts[i] - ts[i-1]) / speed`` capped
at
  ``max_delay``; burst mode sleeps 1 ms per event) and verifies content hashes.
* :class:`Recorder` captures a live folder with watchdog: an initial scan (``initial_dir``/``initial_file``),
then
  ``created``/``modified``/``appended``/``truncated``/``deleted``/``moved``. Unlike epuplayer it only records
  an
  ``appended`` event when the old content is a prefix of the new one (a rewrite that grows is a ``modified``),
  and
  :meth:`Recorder.stop` reconciles the final state so that a replay reproduces the folder exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

logger = logging.getLogger(__name__)

EventType = Literal[
    "initial_dir", "initial_file", "created", "modified", "deleted", "moved", "appended", "truncated"
]
INLINE_LIMIT = 1024 * 1024
"""Text content up to this size is stored inline; larger content goes to a chunk (as epuplayer does)."""
TEXT_EXTENSIONS = frozenset({"xml", "dm", "txt", "json", "log"})
BINARY_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "tif", "tiff", "mrc", "dat", "eer"})


class RecordingError(Exception):
    """A recording that cannot be read, or a replay that cannot be applied."""


class EPUEvent(BaseModel):
    """One recorded file-system event; exactly epuplayer's ``EPUEvent`` fields (extra keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: float
    event_type: EventType
    src_path: str
    """Relative to the watch folder, POSIX form."""
    dest_path: str | None = None
    is_directory: bool = False
    content: str | None = None
    size: int | None = None
    content_hash: str | None = None
    binary_chunk_id: str | None = None
    operation_data: dict[str, Any] | None = None
    file_position: int | None = None
    is_placeholder: bool = False


_EVENT_FIELDS = frozenset(EPUEvent.model_fields)
_EVENT_TYPES = frozenset(get_args(EventType))


class RecordingMetadata(BaseModel):
    """``metadata`` of ``recording.json``."""

    model_config = ConfigDict(extra="allow")

    recorded_at: str
    watch_dir: str
    total_events: int = 0
    version: str = "2.0"
    platform: str = sys.platform


@dataclass
class Recording:
    """Events plus the binary chunks they reference."""

    metadata: RecordingMetadata
    events: list[EPUEvent] = field(default_factory=list)
    chunks: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What loading left out: unknown event fields (ignored) and unknown event kinds (their events skipped)."""
    skipped_events: int = 0
    """Events left out on load because their kind is unknown."""

    @classmethod
    def new(cls, watch_dir: str | os.PathLike[str]) -> Recording:
        """An empty recording of ``watch_dir``, stamped now."""
        return cls(
            RecordingMetadata(
                recorded_at=datetime.now(UTC).isoformat(), watch_dir=str(Path(watch_dir).resolve())
            )
        )

    def add_chunk(self, data: bytes) -> str:
        """Store ``data`` as the next chunk; returns its id (``chunk_<N>``)."""
        chunk_id = f"chunk_{len(self.chunks)}"
        self.chunks[chunk_id] = data
        return chunk_id

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recording:
        """Read a ``.tar.gz`` recording or a legacy plain-JSON one."""
        source = Path(path)
        try:
            if tarfile.is_tarfile(source):
                return cls._load_tar(source)
            return cls._from_json(json.loads(source.read_text(encoding="utf-8")), {}, source)
        except (OSError, tarfile.TarError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"cannot read recording {source}: {exc}") from exc

    @classmethod
    def _load_tar(cls, source: Path) -> Recording:
        chunks: dict[str, bytes] = {}
        document: dict[str, Any] | None = None
        with tarfile.open(source, "r:*") as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name)
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                if name.name == "recording.json" and len(name.parts) <= 2:
                    document = json.loads(handle.read().decode("utf-8"))
                elif name.parent.name == "chunks" and name.suffix == ".bin":
                    chunks[name.stem] = handle.read()
        if document is None:
            raise RecordingError(f"{source} has no recording.json")
        return cls._from_json(document, chunks, source)

    @classmethod
    def _from_json(cls, document: Any, chunks: dict[str, bytes], source: Path) -> Recording:
        if not isinstance(document, dict) or "metadata" not in document or "events" not in document:
            raise RecordingError(f"{source}: not an epuplayer recording (needs 'metadata' and 'events')")
        try:
            metadata = RecordingMetadata.model_validate(document["metadata"])
        except ValidationError as exc:
            raise RecordingError(f"{source}: invalid recording: {exc}".splitlines()[0]) from exc
        raw_events = document["events"]
        if not isinstance(raw_events, list):
            raise RecordingError(f"{source}: invalid recording: 'events' is not a list")
        events: list[EPUEvent] = []
        unknown_fields: Counter[str] = Counter()
        unknown_kinds: Counter[str] = Counter()
        for index, raw in enumerate(raw_events):
            if not isinstance(raw, dict):
                raise RecordingError(f"{source}: invalid recording: event {index} is not an object")
            extra = [name for name in raw if name not in _EVENT_FIELDS]
            unknown_fields.update(extra)
            data = {name: value for name, value in raw.items() if name in _EVENT_FIELDS}
            kind = data.get("event_type")
            if isinstance(kind, str) and kind not in _EVENT_TYPES:
                unknown_kinds[kind] += 1
                continue
            try:
                events.append(EPUEvent.model_validate(data))
            except ValidationError as exc:
                raise RecordingError(
                    f"{source}: invalid recording: event {index}: {exc}".splitlines()[0]
                ) from exc
        missing = {e.binary_chunk_id for e in events if e.binary_chunk_id} - set(chunks)
        if missing:
            raise RecordingError(f"{source}: events reference missing chunks {sorted(missing)[:5]}")
        warnings = [
            f"unknown event field {name!r} ignored ({n} event(s))"
            for name, n in sorted(unknown_fields.items())
        ]
        warnings.extend(
            f"unknown event kind {kind!r}: {n} event(s) skipped" for kind, n in sorted(unknown_kinds.items())
        )
        return cls(metadata, events, chunks, warnings, sum(unknown_kinds.values()))

    def to_json(self) -> dict[str, Any]:
        """The ``recording.json`` document."""
        metadata = self.metadata.model_copy(update={"total_events": len(self.events)})
        return {
            "metadata": metadata.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in self.events],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.tar.gz`` archive (``recording.json`` + ``chunks/chunk_<N>.bin``)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        document = json.dumps(self.to_json(), indent=2).encode("utf-8")
        tmp = target.with_name(f".{target.name}.tmp")
        with tarfile.open(tmp, "w:gz") as archive:
            _add_bytes(archive, "recording.json", document)
            for chunk_id, data in self.chunks.items():
                _add_bytes(archive, f"chunks/{chunk_id}.bin", data)
        tmp.replace(target)
        return target


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def sha256_hex(data: bytes) -> str:
    """SHA-256 hex digest, the recording's ``content_hash``."""
    return hashlib.sha256(data).hexdigest()


def folder_hashes(
    root: str | os.PathLike[str], *, ignore: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of every file under ``root`` (for replay checks)."""
    base = Path(root)
    result: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file():
            rel = path.relative_to(base).as_posix()
            if ignore is None or not ignore(rel):
                result[rel] = sha256_hex(path.read_bytes())
    return result


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


# ----------------------------------------------------------------------------------------------------------
# Recording a live folder
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Known:
    size: int
    digest: str


class Recorder:
    """Capture a folder into a :class:`Recording` (initial scan + watchdog events).

    ``skip_binary_content`` (epuplayer's default) records binary files as placeholders (replayed as zeros);
    pass
    ``False`` to keep their bytes as chunks. Use :meth:`start` / :meth:`stop`, or as a context manager.
    """

    def __init__(
        self,
        watch_dir: str | os.PathLike[str],
        *,
        skip_binary_content: bool = True,
        force_text_extensions: Iterable[str] = (),
        force_binary_extensions: Iterable[str] = (),
        ignore: Callable[[str], bool] | None = None,
    ) -> None:
        self.watch_dir = Path(watch_dir).resolve()
        self.skip_binary_content = skip_binary_content
        self._text_ext = (TEXT_EXTENSIONS | {e.lower().lstrip(".") for e in force_text_extensions}) - {
            e.lower().lstrip(".") for e in force_binary_extensions
        }
        self._binary_ext = (BINARY_EXTENSIONS | {e.lower().lstrip(".") for e in force_binary_extensions}) - {
            e.lower().lstrip(".") for e in force_text_extensions
        }
        self._ignore = ignore
        self._lock = threading.Lock()
        self._known: dict[str, _Known] = {}
        self._dirs: set[str] = set()
        self.recording = Recording.new(self.watch_dir)
        self._observer: Any = None

    # -- classification -------------------------------------------------------------------------------------

    def _is_text(self, path: Path, data: bytes) -> bool:
        ext = path.suffix.lower().lstrip(".")
        if ext in self._text_ext:
            return True
        if ext in self._binary_ext:
            return False
        head = data[:1024]
        if b"\x00" in head:
            return False
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def _rel(self, path: str | os.PathLike[str]) -> str | None:
        try:
            rel = Path(os.fsdecode(path)).resolve().relative_to(self.watch_dir).as_posix()
        except ValueError:
            return None
        if rel in ("", ".") or (self._ignore is not None and self._ignore(rel)):
            return None
        return rel

    # -- event construction
    # -----------------------------------------------------------------------------------

    def _full_event(
        self, kind: EventType, rel: str, path: Path, data: bytes, extra: dict[str, Any] | None = None
    ) -> EPUEvent:
        digest = sha256_hex(data)
        common: dict[str, Any] = {
            "timestamp": time.time(),
            "event_type": kind,
            "src_path": rel,
            "size": len(data),
            "content_hash": digest,
            "operation_data": extra,
        }
        if self._is_text(path, data) and len(data) < INLINE_LIMIT:
            try:
                return EPUEvent(content=data.decode("utf-8"), **common)
            except UnicodeDecodeError:
                pass
        if self.skip_binary_content and not self._is_text(path, data):
            return EPUEvent(is_placeholder=True, **common)
        return EPUEvent(binary_chunk_id=self.recording.add_chunk(data), **common)

    def _emit(self, event: EPUEvent) -> None:
        self.recording.events.append(event)

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return None

    def _ensure_parents(self, rel: str) -> None:
        parents = list(PurePosixPath(rel).parents)[:-1]
        for parent in reversed(parents):
            key = parent.as_posix()
            if key not in self._dirs:
                self._dirs.add(key)
                self._emit(
                    EPUEvent(timestamp=time.time(), event_type="created", src_path=key, is_directory=True)
                )

    def _file_changed(self, path: Path, *, initial: bool = False) -> None:
        """Record ``path``'s change since it was last seen (created / appended / truncated / modified)."""
        rel = self._rel(path)
        if rel is None:
            return
        data = self._read(path)
        if data is None:
            return
        known = self._known.get(rel)
        digest = sha256_hex(data)
        if known is not None and known.digest == digest:
            return
        self._ensure_parents(rel)
        if known is None:
            kind: EventType = "initial_file" if initial else "created"
            extra = None
            if initial:
                stat = path.stat()
                extra = {"mtime": stat.st_mtime, "atime": stat.st_atime}
            self._emit(self._full_event(kind, rel, path, data, extra))
        elif (
            len(data) > known.size
            and sha256_hex(data[: known.size]) == known.digest
            # A placeholder grows by a full "modified" event: epuplayer's replayer appends nothing for an
            # "appended" placeholder, while it rewrites a "modified" one at its new size.
            and not (self.skip_binary_content and not self._is_text(path, data))
        ):
            appended = data[known.size :]
            event = self._full_event("appended", rel, path, appended, {"append_size": len(appended)})
            self._emit(
                event.model_copy(
                    update={"size": len(data), "content_hash": digest, "file_position": known.size}
                )
            )
        elif len(data) < known.size and sha256_hex(data) == self._prefix_digest(rel, len(data)):
            self._emit(
                EPUEvent(
                    timestamp=time.time(),
                    event_type="truncated",
                    src_path=rel,
                    size=len(data),
                    content_hash=digest,
                    operation_data={"new_size": len(data)},
                )
            )
        else:
            self._emit(self._full_event("modified", rel, path, data))
        self._known[rel] = _Known(len(data), digest)

    def _prefix_digest(self, rel: str, size: int) -> str | None:
        """Digest of the first ``size`` bytes of the last recorded content, when it is still recoverable."""
        content = self._replayed_content(rel)
        return None if content is None else sha256_hex(content[:size])

    def _replayed_content(self, rel: str) -> bytes | None:
        """Reconstruct the last recorded bytes of ``rel`` from the events (used only for shrinking files)."""
        data: bytes | None = None
        for event in self.recording.events:
            if event.is_directory:
                continue
            if event.event_type == "moved" and event.dest_path == rel:
                data = None
            if event.src_path != rel:
                continue
            if event.event_type in ("initial_file", "created", "modified"):
                data = self._event_bytes(event)
            elif event.event_type == "appended" and data is not None:
                data += self._event_bytes(event)
            elif event.event_type == "truncated" and data is not None:
                data = data[: event.size or 0]
            elif event.event_type == "deleted":
                data = None
        return data

    def _event_bytes(self, event: EPUEvent) -> bytes:
        if event.is_placeholder:
            return b"\x00" * (event.size or 0)
        if event.binary_chunk_id is not None:
            return self.recording.chunks[event.binary_chunk_id]
        return (event.content or "").encode("utf-8")

    # -- watchdog callbacks
    # -------------------------------------------------------------------------------------

    def on_event(self, event: FileSystemEvent) -> None:
        """Handle one watchdog event (called from the observer thread)."""
        src = Path(os.fsdecode(event.src_path))
        with self._lock:
            if event.event_type in ("created", "modified", "closed"):
                if event.is_directory:
                    rel = self._rel(src)
                    if rel is not None and rel not in self._dirs and event.event_type == "created":
                        self._ensure_parents(rel)
                        self._dirs.add(rel)
                        self._emit(
                            EPUEvent(
                                timestamp=time.time(), event_type="created", src_path=rel, is_directory=True
                            )
                        )
                    return
                self._file_changed(src)
            elif event.event_type == "deleted":
                rel = self._rel(src)
                if rel is None:
                    return
                if rel in self._known or rel in self._dirs:
                    self._known.pop(rel, None)
                    self._dirs.discard(rel)
                    self._emit(
                        EPUEvent(
                            timestamp=time.time(),
                            event_type="deleted",
                            src_path=rel,
                            is_directory=event.is_directory,
                        )
                    )
            elif event.event_type == "moved":
                self._moved(src, Path(os.fsdecode(event.dest_path)), event.is_directory)

    def _moved(self, src: Path, dest: Path, is_directory: bool) -> None:
        rel_src, rel_dest = self._rel(src), self._rel(dest)
        if rel_dest is None:
            if rel_src is not None and rel_src in self._known:
                self._known.pop(rel_src)
                self._emit(EPUEvent(timestamp=time.time(), event_type="deleted", src_path=rel_src))
            return
        if is_directory:
            self._dirs.add(rel_dest)
            if rel_src is not None and rel_src in self._dirs:
                self._emit(
                    EPUEvent(
                        timestamp=time.time(),
                        event_type="moved",
                        src_path=rel_src,
                        dest_path=rel_dest,
                        is_directory=True,
                    )
                )
                for key in [k for k in self._known if k.startswith(rel_src + "/")]:
                    self._known[rel_dest + key[len(rel_src) :]] = self._known.pop(key)
            return
        if rel_src is not None and rel_src in self._known:
            self._ensure_parents(rel_dest)
            known = self._known.pop(rel_src)
            self._emit(
                EPUEvent(
                    timestamp=time.time(),
                    event_type="moved",
                    src_path=rel_src,
                    dest_path=rel_dest,
                    size=known.size,
                    content_hash=known.digest,
                )
            )
            self._known[rel_dest] = known
        self._file_changed(dest)

    # -- lifecycle
    # ------------------------------------------------------------------------------------------------

    def _scan(self, *, initial: bool) -> None:
        for path in sorted(self.watch_dir.rglob("*")):
            rel = self._rel(path)
            if rel is None:
                continue
            if path.is_dir():
                if rel not in self._dirs:
                    self._ensure_parents(rel)
                    self._dirs.add(rel)
                    self._emit(
                        EPUEvent(
                            timestamp=time.time(),
                            event_type="initial_dir" if initial else "created",
                            src_path=rel,
                            is_directory=True,
                        )
                    )
            elif path.is_file():
                self._file_changed(path, initial=initial)

    def start(self) -> None:
        """Scan the folder (``initial_*`` events) and start the watchdog observer."""
        if self._observer is not None:
            raise RuntimeError("recorder already started")
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        handler = _Handler(self)
        observer = Observer()
        observer.schedule(handler, str(self.watch_dir), recursive=True)
        observer.start()
        self._observer = observer
        with self._lock:
            self._scan(initial=True)

    def stop(self, *, reconcile: bool = True, timeout: float = 5.0) -> Recording:
        """Stop watching; with ``reconcile`` record any change the observer had not reported yet. Returns the
        recording."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if reconcile:
            with self._lock:
                present: set[str] = set()
                for path in self.watch_dir.rglob("*"):
                    rel = self._rel(path)
                    if rel is not None and path.is_file():
                        present.add(rel)
                self._scan(initial=False)
                for rel in sorted(set(self._known) - present):
                    self._known.pop(rel)
                    self._emit(EPUEvent(timestamp=time.time(), event_type="deleted", src_path=rel))
        self.recording.metadata.total_events = len(self.recording.events)
        return self.recording

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(FileSystemEventHandler):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._recorder.on_event(event)
        except OSError as exc:
            # A file that vanished between the event and the read is recorded by a later event or the final
            # reconcile pass; log so that a persistent I/O problem is visible.
            logger.warning("recorder could not read %s: %s", event.src_path, exc)


__all__ = [
    "BINARY_EXTENSIONS",
    "INLINE_LIMIT",
    "TEXT_EXTENSIONS",
    "EPUEvent",
    "Recorder",
    "Recording",
    "RecordingError",
    "RecordingMetadata",
    "ReplayResult",
    "Replayer",
    "folder_hashes",
    "sha256_hex",
]
