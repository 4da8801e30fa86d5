"""``SemphonyServer``: the Semphony-compatible control server on a background thread (tests, demo)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.control import SimulatedControlServer
from agent.devices.simulator.sem import SemSimulator
from testbed.semphony_server.app import create_app
from testbed.semphony_server.server_thread import UvicornThread

__all__ = ["DEFAULT_API_KEY", "SemphonyServer"]

DEFAULT_API_KEY = "testbed-semphony-key"


class SemphonyServer:
    """A control server over a fresh simulator on 127.0.0.1: ``start()``, ``stop()``, ``url``, ``with``.

    The simulator state survives ``stop()``/``start()`` (same port). Fault injection methods act on the
    next matching requests.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = DEFAULT_API_KEY,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.core = SimulatedControlServer(config)
        self.app = create_app(self.core, api_key=api_key)
        self._thread = UvicornThread(self.app, host=host, port=port, name="semphony-server")

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self._thread.url

    @property
    def simulator(self) -> SemSimulator:
        """The simulated SEM (read state and counters; do not drive it from another thread)."""
        return self.core.sem

    def start(self) -> Self:
        """Start serving (returns once requests are accepted)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._thread.stop()

    def inject_acquire_timeout(self, count: int = 1) -> None:
        """The next ``count`` acquisitions answer 504 without acquiring."""
        self.core.acquire_timeouts += count

    def inject_stale_latest_pos(self, count: int = 1) -> None:
        """The next ``count`` get_latest_pos calls answer 409 stale."""
        self.core.stale_latest_positions += count

    def action_counts(self) -> dict[str, int]:
        """Device actions executed so far, by capability."""
        return self.core.action_counts()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
