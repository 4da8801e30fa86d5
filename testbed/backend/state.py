"""The running backend's shared state: options, stores, stream hub and fault injector.

One :class:`BackendState` belongs to one app. Its stores exist between the app's lifespan start and stop (the
SQLite file is opened at start and closed at stop); route handlers reach them through the properties, which
fail loudly if the app is used without its lifespan.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio.to_thread

from testbed.backend.agent_store import AgentStore
from testbed.backend.db import Db
from testbed.backend.entity_store import EntityStore
from testbed.backend.faults import FaultInjector
from testbed.backend.options import BackendOptions

RESET_GRACE_S = 5.0
"""How long :meth:`BackendState.reset` waits for the streams it ended to finish."""

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking store call in a worker thread so the event loop keeps serving streams."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class StreamHandle:
    """One open SSE stream: woken when its session gets instructions, or told to end."""

    def __init__(self, session_id: str, connection_id: str) -> None:
        self.session_id = session_id
        self.connection_id = connection_id
        self.wake = asyncio.Event()
        self.end_reason: str | None = None

    def end(self, reason: str) -> None:
        """Ask the stream to finish at once (fault injection, session closed, shutdown)."""
        self.end_reason = reason
        self.wake.set()


class StreamHub:
    """Open streams by session. Used only on the event loop's thread (other threads go through
    ``loop.call_soon_threadsafe``), so it needs no lock."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[StreamHandle]] = {}
        self._idle = asyncio.Event()  # set while no stream is open
        self._idle.set()

    def register(self, handle: StreamHandle) -> None:
        """Track an open stream."""
        self._by_session.setdefault(handle.session_id, set()).add(handle)
        self._idle.clear()

    def unregister(self, handle: StreamHandle) -> None:
        """Forget a finished stream."""
        handles = self._by_session.get(handle.session_id)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del self._by_session[handle.session_id]
        if not self._by_session:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no stream is open."""
        await self._idle.wait()

    def notify(self, session_id: str) -> None:
        """Wake the session's streams: there may be instructions to deliver."""
        for handle in self._by_session.get(session_id, ()):
            handle.wake.set()

    def end_session(self, session_id: str, reason: str) -> int:
        """End the session's streams; returns how many."""
        handles = list(self._by_session.get(session_id, ()))
        for handle in handles:
            handle.end(reason)
        return len(handles)

    def end_all(self, reason: str) -> int:
        """End every open stream; returns how many."""
        handles = [h for hs in self._by_session.values() for h in hs]
        for handle in handles:
            handle.end(reason)
        return len(handles)

    def live_connection_ids(self) -> set[str]:
        """Connection ids of the streams open right now."""
        return {h.connection_id for hs in self._by_session.values() for h in hs}

    def open_count(self, session_id: str | None = None) -> int:
        """Number of open streams (of one session, or all)."""
        if session_id is not None:
            return len(self._by_session.get(session_id, ()))
        return sum(len(hs) for hs in self._by_session.values())


@dataclass
class BackendState:
    """Everything the routes share."""

    db_path: Path
    options: BackendOptions
    faults: FaultInjector
    hub: StreamHub = field(default_factory=StreamHub)
    loop: asyncio.AbstractEventLoop | None = None
    _db: Db | None = None
    _entities: EntityStore | None = None
    _agents: AgentStore | None = None

    def open(self) -> None:
        """Open the SQLite file and build the stores (lifespan start)."""
        self._db = Db(self.db_path)
        self._entities = EntityStore(self._db)
        self._agents = AgentStore(self._db, compat=self.options.compat, max_retries=self.options.max_retries)

    def close(self) -> None:
        """Close the SQLite file (lifespan stop)."""
        if self._db is not None:
            self._db.close()
        self._db = self._entities = self._agents = None

    async def reset(self) -> dict[str, int]:
        """Empty the backend as if its database were new: end open streams (waiting up to
        ``RESET_GRACE_S`` for them to finish, so none writes to the emptied tables), clear faults, delete every
        row. Call on the server's event loop."""
        ended = self.hub.end_all("reset")
        try:
            async with asyncio.timeout(RESET_GRACE_S):
                await self.hub.wait_idle()
        except TimeoutError:
            raise RuntimeError(
                f"{self.hub.open_count()} SSE streams did not end within {RESET_GRACE_S} s"
            ) from None
        self.faults.reset()
        db = self._db
        if db is None:
            raise RuntimeError(
                "backend store is not open: run the app with its lifespan (e.g. BackendServer)"
            )
        deleted = await in_thread(db.clear)
        return {"ended_streams": ended, "deleted_rows": deleted}

    @property
    def strict(self) -> bool:
        """True in strict mode."""
        return self.options.compat == "strict"

    @property
    def entities(self) -> EntityStore:
        """The entity store (only while the app runs)."""
        if self._entities is None:
            raise RuntimeError(
                "backend store is not open: run the app with its lifespan (e.g. BackendServer)"
            )
        return self._entities

    @property
    def agents(self) -> AgentStore:
        """The agent store (only while the app runs)."""
        if self._agents is None:
            raise RuntimeError(
                "backend store is not open: run the app with its lifespan (e.g. BackendServer)"
            )
        return self._agents


__all__ = ["BackendState", "StreamHandle", "StreamHub", "in_thread"]
