"""Settling: hand a file to the parser only once it stopped changing.

EPU writes files incrementally and rewrites some of them; a watcher sees files mid-write. A path is *settled* when
two observations of its (size, mtime) agree and the file has not been modified for ``settle_time_s``. A file found
by the start-up scan that was last modified long ago is therefore settled on the first look (no waiting during a
backlog import), while a file being written waits until the writer pauses. A parse that still reports the file as
incomplete puts it back with an exponential delay (:meth:`Settler.retry_later`): it is never dropped.

The settler holds at most ``capacity`` paths; :meth:`Settler.offer` says ``False`` beyond that and the caller parks
the path on disk (the bounded-memory half of the backpressure design).
"""

from __future__ import annotations

import asyncio
import heapq
import os
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    due: float
    size: int | None = None
    mtime_ns: int | None = None


class Settler:
    """A bounded set of paths waiting to settle, with one timer heap (no per-path polling loop)."""

    def __init__(
        self,
        *,
        settle_time_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_time_s = settle_time_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.capacity = capacity
        self._clock = clock
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    @property
    def has_room(self) -> bool:
        """Whether :meth:`offer` would accept a new path."""
        return len(self._entries) < self.capacity

    @property
    def retrying(self) -> int:
        """Paths that parsed as incomplete at least once and have not been parsed successfully since."""
        return len(self._failures)

    def _push(self, path: str, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, path))

    def offer(self, path: str) -> bool:
        """Watch ``path`` until it settles. Returns ``False`` (path not taken) when the settler is full."""
        entry = self._entries.get(path)
        now = self._clock()
        if entry is not None:
            # Already waiting: a new event only means "look again soon"; the size check does the debouncing.
            if entry.due > now + self.settle_time_s:
                entry.due = now
                self._push(path, now)
                self._wake.set()
            return True
        if len(self._entries) >= self.capacity:
            return False
        self._entries[path] = _Entry(due=now)
        self._push(path, now)
        self._wake.set()
        return True

    def retry_later(self, path: str) -> float:
        """The parse found ``path`` incomplete: look at it again after an exponential delay; returns the delay.

        Accepted even when the settler is full, because the path was already counted against the capacity.
        """
        failures = self._failures.get(path, 0) + 1
        self._failures[path] = failures
        # Not the retry policy's backoff (backend_client.retry): that one spreads many clients' retries on one
        # server with jitter and gives up after a budget, while this waits for EPU to finish writing a local
        # file, which is never given up on and has nobody to spread from: a plain capped doubling, predictable.
        delay = float(min(self.retry_initial_s * (2 ** (failures - 1)), self.retry_max_s))
        due = self._clock() + delay
        entry = self._entries.get(path)
        if entry is None:
            self._entries[path] = _Entry(due=due)
        else:
            entry.due = min(entry.due, due)  # a new write event meanwhile asks for an earlier look
        self._push(path, self._entries[path].due)
        self._wake.set()
        return delay

    def succeeded(self, path: str) -> None:
        """The path was parsed (or definitively refused): forget its failure count."""
        self._failures.pop(path, None)

    def forget(self, path: str) -> None:
        """Stop watching ``path`` (it was deleted)."""
        self._entries.pop(path, None)
        self._failures.pop(path, None)

    def poll(self, limit: int = 1000) -> list[str]:
        """Paths that are settled now (removed from the settler); reschedules the ones still changing."""
        return [path for path, _size, _mtime in self.poll_stat(limit)]

    def poll_stat(self, limit: int = 1000) -> list[tuple[str, int, int]]:
        """:meth:`poll` with the ``(path, size, mtime_ns)`` observed when each path settled.

        The caller can compare that observation with the last processed version without a second ``stat``.
        """
        now = self._clock()
        wall = self._wall()
        ready: list[tuple[str, int, int]] = []
        while self._heap and self._heap[0][0] <= now and len(ready) < limit:
            due, _, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is None or entry.due != due:
                continue  # superseded timer
            try:
                st = os.stat(path)  # noqa: PTH116 - no Path object per poll on the hot path
            except FileNotFoundError:
                # Deleted or renamed away; a rename brings its own event for the new name.
                self.forget(path)
                continue
            except OSError:
                entry.due = now + max(self.settle_time_s, self.retry_initial_s)
                self._push(path, entry.due)
                continue
            age = wall - st.st_mtime_ns / 1e9
            same = entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns
            if (same or entry.size is None) and age >= self.settle_time_s:
                del self._entries[path]
                ready.append((path, st.st_size, st.st_mtime_ns))
                continue
            entry.size, entry.mtime_ns = st.st_size, st.st_mtime_ns
            # Look again once the file would be settle_time old if it does not change meanwhile.
            entry.due = now + max(self.settle_time_s - max(age, 0.0), 0.01)
            self._push(path, entry.due)
        return ready

    def next_due(self) -> float | None:
        """Seconds until the earliest timer (0 when one is due), ``None`` when nothing waits."""
        while self._heap:
            due, _, path = self._heap[0]
            entry = self._entries.get(path)
            if entry is None or entry.due != due:
                heapq.heappop(self._heap)
                continue
            return max(due - self._clock(), 0.0)
        return None

    async def wait(self, max_wait_s: float) -> None:
        """Sleep until the next timer is due, a path is offered, or ``max_wait_s`` passed."""
        delay = self.next_due()
        timeout = max_wait_s if delay is None else min(delay, max_wait_s)
        if timeout <= 0:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return


__all__ = ["Settler"]
