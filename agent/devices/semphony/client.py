"""``SemphonyClient``, ``Run``, ``Session`` and the module-level ``run()`` helper of the Semphony SDK."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from agent.devices.backend import DeviceBackend
from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import ImagingGuardrails
from agent.devices.http_backend import SemphonyHttpBackend
from agent.devices.microscope import write_atomically
from agent.devices.semphony._bridge import BridgeClosedError, LoopThread
from agent.devices.simulator_backend import SimulatorBackend
from agent.devices.simulator_config import SimulatorConfig

__all__ = ["Run", "SemphonyClient", "Session", "run"]

_T = TypeVar("_T")


class SemphonyClient:
    """Client of a Semphony control server: creates runs, invokes capabilities, downloads artifacts.

    ``SemphonyClient(base_url, api_key)`` talks HTTP (Bearer token). :meth:`simulated` builds one over the
    in-process SEM simulator and :meth:`from_backend` over any :class:`DeviceBackend`. Methods are synchronous
    and thread-safe, for scripts and notebooks; async code (the daemon) drives the backend through the
    asynchronous facade (:mod:`agent.devices.microscope`) instead. Close with :meth:`close` or use the client as
    a context manager.
    """

    base_url: str
    backend: DeviceBackend

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._setup(SemphonyHttpBackend(base_url, api_key, timeout=timeout, transport=transport))

    def _setup(self, backend: DeviceBackend) -> None:
        self.backend = backend
        self.base_url = getattr(backend, "base_url", "sim://in-process")
        self._bridge = LoopThread()
        self._closed = False

    @classmethod
    def from_backend(cls, backend: DeviceBackend) -> SemphonyClient:
        """A client over an existing backend (the client takes ownership and closes it)."""
        client = cls.__new__(cls)
        client._setup(backend)
        return client

    @classmethod
    def simulated(cls, config: SimulatorConfig | None = None) -> SemphonyClient:
        """A client over a fresh in-process SEM simulator (``client.backend.server`` exposes it)."""
        return cls.from_backend(SimulatorBackend(config))

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a backend coroutine on the client's private loop (used by the device classes)."""
        if self._closed:
            coro.close()
            raise SemphonyApiError("client is closed")
        try:
            return self._bridge.run(coro)
        except BridgeClosedError as exc:
            raise SemphonyApiError(str(exc)) from None

    def run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> Run:
        """Create a run, or resume the run with this name when ``resume`` (default)."""
        data = self.call(self.backend.create_run(name, resume=resume, metadata=metadata, system=system))
        return Run(self, data)

    def invoke_capability(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Invoke a capability on the device attached to a session (no client-side guardrails here)."""
        return self.call(self.backend.invoke(run_id, session_id, capability_id, payload))

    def download_image(self, image_id: str | int | None, *, target_path: str | None = None) -> bytes | str:
        """Download an artifact: its bytes, or with ``target_path`` the path it was written to."""
        if image_id is None:
            raise SemphonyApiError("image_id is None: nothing to download")
        blob = self.call(self.backend.download(str(image_id)))
        if target_path is None:
            return blob
        path = Path(target_path)
        write_atomically(path, blob)
        return str(path)

    def close(self) -> None:
        """Close the backend and stop the private loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._bridge.stop(self.backend.close())

    def __enter__(self) -> SemphonyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Run:
    """An experiment instance on the server; open sessions with :meth:`session`."""

    def __init__(self, client: SemphonyClient, data: dict[str, Any]) -> None:
        self.client = client
        self._data = data

    @property
    def id(self) -> int:
        """Server-assigned run id."""
        return int(self._data["id"])

    @property
    def name(self) -> str:
        """Name of the run."""
        return str(self._data["name"])

    @property
    def status(self) -> str:
        """Run status as last seen ("pending", "running", "finished"); :meth:`refresh` re-reads it."""
        return str(self._data.get("status", "pending"))

    @property
    def metadata(self) -> dict[str, Any]:
        """Metadata stored with the run."""
        return dict(self._data.get("metadata") or {})

    def refresh(self) -> Run:
        """Re-read the run from the server."""
        self._data = self.client.call(self.client.backend.get_run(self.id))
        return self

    def session(self, guardrails: ImagingGuardrails | None = None) -> Session:
        """A new (not yet started) session; use ``with run.session() as s:`` or :meth:`Session.start`."""
        return Session(self, guardrails)

    def __repr__(self) -> str:
        return f"Run(id={self.id}, name={self.name!r}, status={self.status!r})"


class Session:
    """A session of a run: the scope in which devices are attached and commands run."""

    def __init__(self, run: Run, guardrails: ImagingGuardrails | None = None) -> None:
        self.run = run
        self.guardrails = guardrails
        self._data: dict[str, Any] | None = None
        self._closed = False

    @property
    def client(self) -> SemphonyClient:
        """The client of the session's run."""
        return self.run.client

    @property
    def started(self) -> bool:
        """Whether the session exists on the server."""
        return self._data is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    @property
    def id(self) -> int:
        """Server-assigned session id (the session must be started)."""
        if self._data is None:
            raise SemphonyApiError("session not started: call start() or use it as a context manager")
        return int(self._data["id"])

    def start(self) -> Session:
        """Create the session on the server and send its guardrails (idempotent)."""
        if self._closed:
            raise SemphonyApiError("session is closed")
        if self._data is None:
            client = self.client
            self._data = client.call(client.backend.create_session(self.run.id))
            if self.guardrails is not None:
                guardrails = self.guardrails.model_dump(mode="json")
                client.call(client.backend.set_guardrails(self.run.id, self.id, guardrails))
            self.run.refresh()
        return self

    def close(self) -> None:
        """Finish the session (and its run when it is the last one) on the server (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._data is not None:
            client = self.client
            client.call(client.backend.close_session(self.run.id, self.id))
            self.run.refresh()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ident = self._data["id"] if self._data else None
        return f"Session(id={ident}, run={self.run.id}, closed={self._closed})"


def run(
    name: str,
    *,
    client: SemphonyClient,
    resume: bool = True,
    metadata: dict[str, Any] | None = None,
    system: str | None = None,
) -> Run:
    """Module-level convenience: ``client.run(name, ...)``."""
    return client.run(name, resume=resume, metadata=metadata, system=system)
