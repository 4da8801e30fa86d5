"""Record a live folder into an epuplayer-compatible recording.

* :class:`Recorder` captures a live folder with watchdog: an initial scan (``initial_dir``/``initial_file``),
  then ``created``/``modified``/``appended``/``truncated``/``deleted``/``moved``. Unlike epuplayer it only
  records an ``appended`` event when the old content is a prefix of the new one (a rewrite that grows is a
  ``modified``), and :meth:`Recorder.stop` reconciles the final state so that a replay reproduces the folder
  exactly.

The format itself (:class:`~testbed.epu.recording.Recording`) lives in :mod:`testbed.epu.recording`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from testbed.epu.recording import (
    BINARY_EXTENSIONS,
    INLINE_LIMIT,
    TEXT_EXTENSIONS,
    EPUEvent,
    EventType,
    Recording,
    sha256_hex,
)

logger = logging.getLogger(__name__)

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


__all__ = ["Recorder"]
