"""``AthenaServer``: the Athena stand-in on a background thread (tests, demo)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from testbed.athena.app import AthenaStore, create_app
from testbed.semphony_server.server_thread import UvicornThread

__all__ = ["AthenaServer"]


class AthenaServer:
    """The stand-in on 127.0.0.1: ``start()``, ``stop()``, ``url``, context manager; restartable."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.store = AthenaStore()
        self.app = create_app(self.store)
        self._thread = UvicornThread(self.app, host=host, port=port, name="athena-server")

    @property
    def url(self) -> str:
        """Base URL (the API is under ``/api/v1``)."""
        return self._thread.url

    def start(self) -> Self:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._thread.stop()

    def decisions(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Stored decisions (of one session, or all), oldest first."""
        return [dict(d) for d in self.store.decisions if session_id is None or d["sessionId"] == session_id]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
