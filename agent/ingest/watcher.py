"""File discovery: a watchdog observer plus a start-up scan, with no gap between them.

The observer is started *before* the scan, so a file created while the scan runs is reported by at least one of
the two; duplicates are harmless because the settler keys on the path and the pipeline skips a file whose
content it has already processed. Created, modified and moved (destination) events are forwarded; a directory that
appears (created or moved in as a whole, which inotify reports as one event) is scanned, since its contents bring
no events of their own.

Native events do not arrive on SMB/NFS shares, so ``mode="auto"`` uses watchdog's polling observer for network
file systems (and UNC paths on Windows) and the native observer elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

#: File-system types (Linux ``/proc/mounts``) on which inotify misses changes made by other machines.
NETWORK_FS_TYPES = frozenset(
    {"cifs", "smb3", "smbfs", "nfs", "nfs4", "fuse.sshfs", "9p", "afs", "ncpfs", "fuse.gvfsd-fuse", "davfs"}
)


def _linux_fs_type(path: Path) -> str | None:
    """File-system type of the mount holding ``path`` (longest mount-point prefix), from ``/proc/mounts``."""
    try:
        text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    best: tuple[int, str] | None = None
    target = str(path)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and (
            best is None or len(mount) > best[0]
        ):
            best = (len(mount), parts[2])
    return None if best is None else best[1]


def _windows_is_remote(path: Path) -> bool:
    """UNC path, or a drive letter that Windows reports as a network drive."""
    text = str(path)
    if text.startswith(("\\\\", "//")):
        return True
    if sys.platform != "win32":
        return False
    import ctypes

    drive_remote = 4
    root = os.path.splitdrive(text)[0] + "\\"
    return int(ctypes.windll.kernel32.GetDriveTypeW(root)) == drive_remote


def is_network_path(path: Path) -> bool:
    """Whether ``path`` lives on a network share (where native change events are unreliable)."""
    if sys.platform == "win32" or str(path).startswith(("\\\\", "//")):
        return _windows_is_remote(path)
    fs_type = _linux_fs_type(path.resolve())
    return fs_type is not None and fs_type.lower() in NETWORK_FS_TYPES


def choose_observer(
    path: Path, mode: Literal["auto", "native", "polling"], poll_interval_s: float
) -> BaseObserver:
    """The observer for ``path``: polling when asked, or automatically on a network share; native otherwise."""
    if mode == "polling" or (mode == "auto" and is_network_path(path)):
        return PollingObserver(timeout=poll_interval_s)
    return Observer()


def scan_tree(root: Path) -> Iterator[str]:
    """Every file below ``root`` (depth first, no symlinked directories followed); unreadable folders skipped."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("ingest.scan_unreadable", extra={"path": folder, "error": str(exc)})
            continue
        subdirs: list[str] = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.is_file():
                    yield entry.path
            except OSError:
                continue
        # Visit session-level files before deep image folders: parents tend to be found first.
        stack.extend(sorted(subdirs, reverse=True))


#: The only events the pipeline needs. Without a filter, inotify also reports every open and read-only close,
#: which the parsers themselves cause: a backlog import would then wake the observer twice per file it reads.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    """Runs on the observer thread: collects paths and hands them to the event loop in batches, never blocks.

    A file being written brings a created event, several modified events and a closed event; they are coalesced
    into one pending entry, and one loop wake-up delivers everything pending (instead of one cross-thread call,
    with its self-pipe write, per event).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_file: Callable[[str], None],
        on_dir: Callable[[str], None],
    ) -> None:
        self._loop = loop
        self._on_file = on_file
        self._on_dir = on_dir
        self._lock = threading.Lock()
        self._pending: dict[str, bool] = {}  # path -> is_dir, in arrival order

    def _send(self, path: str | bytes, is_dir: bool) -> None:
        text = os.fsdecode(path)
        with self._lock:
            first = not self._pending
            self._pending[text] = self._pending.get(text, False) or is_dir
        if first:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: report every pending path (a new wake-up is scheduled by the next event)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for path, is_dir in pending.items():
            (self._on_dir if is_dir else self._on_file)(path)

    def on_created(self, event: FileSystemEvent) -> None:
        self._send(event.src_path, event.is_directory)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._send(event.src_path, False)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._send(event.src_path, False)

    def on_moved(self, event: FileSystemEvent) -> None:
        self._send(event.dest_path, event.is_directory)


class FileWatcher:
    """Watches ``root`` recursively and reports file paths through ``on_file`` (called on the event loop).

    ``on_file`` must be cheap (it is called once per event); the ingest service classifies the name and hands
    the path to the settler. Scans run in a worker thread and report in chunks.
    """

    def __init__(
        self,
        root: Path,
        on_file: Callable[[str], None],
        *,
        mode: Literal["auto", "native", "polling"] = "auto",
        poll_interval_s: float = 2.0,
    ) -> None:
        self.root = root
        self._on_file = on_file
        self._mode = mode
        self._poll_interval_s = poll_interval_s
        self._observer: BaseObserver | None = None
        self._scans: set[asyncio.Task[int]] = set()
        self.observer_kind: str | None = None

    async def start(self) -> None:
        """Start the observer (the root must exist). Call :meth:`scan` afterwards for the existing files."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"watch folder {self.root} does not exist or is not a folder")
        loop = asyncio.get_running_loop()
        observer = choose_observer(self.root, self._mode, self._poll_interval_s)
        observer.schedule(
            _Handler(loop, self._on_file, self._on_dir),
            str(self.root),
            recursive=True,
            event_filter=WATCHED_EVENTS,
        )
        await asyncio.to_thread(observer.start)
        self._observer = observer
        self.observer_kind = "polling" if isinstance(observer, PollingObserver) else "native"
        log.info("ingest.watching", extra={"path": str(self.root), "observer": self.observer_kind})

    async def scan(self, folder: Path | None = None, chunk: int = 500) -> int:
        """Report every file under ``folder`` (default: the root); returns the number of files reported.

        The walk runs in a thread and hands over chunks through a small bounded queue, so a huge tree is never
        held in memory and cancelling the scan stops the thread promptly.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=4)
        stop = threading.Event()
        target = folder or self.root

        def deliver(item: list[str] | None) -> bool:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    future.result(timeout=0.5)
                    return True
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        future.cancel()
                        return False

        def walk() -> None:
            batch: list[str] = []
            try:
                for path in scan_tree(target):
                    if stop.is_set():
                        return
                    batch.append(path)
                    if len(batch) >= chunk:
                        if not deliver(batch):
                            return
                        batch = []
                if batch and not deliver(batch):
                    return
            finally:
                if not stop.is_set():
                    deliver(None)

        walker = asyncio.ensure_future(asyncio.to_thread(walk))
        count = 0
        try:
            while True:
                batch = await queue.get()
                if batch is None:
                    break
                for path in batch:
                    self._on_file(path)
                count += len(batch)
        finally:
            stop.set()
            await asyncio.shield(walker)
        return count

    def _on_dir(self, path: str) -> None:
        task = asyncio.ensure_future(self.scan(Path(path)))
        self._scans.add(task)
        task.add_done_callback(self._scans.discard)

    async def stop(self) -> None:
        """Stop the observer and any folder scans in progress."""
        for task in list(self._scans):
            task.cancel()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)


__all__ = [
    "NETWORK_FS_TYPES",
    "WATCHED_EVENTS",
    "FileWatcher",
    "choose_observer",
    "is_network_path",
    "scan_tree",
]
