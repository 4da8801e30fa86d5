"""The narrow waist of the device layer: one small async interface to a Semphony-style control server.

The Semphony SDK (:mod:`agent.devices.semphony`) is written against :class:`DeviceBackend` only. Three
implementations exist, picked by one switch (``device.backend`` = ``"simulator"`` | ``"semphony"`` |
``"openfibsem"``, see :func:`agent.devices.factory.create_backend`):

* :class:`~agent.devices.simulator_backend.SimulatorBackend`: the SEM simulator in process;
* :class:`~agent.devices.http_backend.SemphonyHttpBackend`: a Semphony control server over HTTP;
* :class:`~agent.devices.openfibsem.backend.OpenFibsemBackend`: a microscope through OpenFIBSEM, in process.

Every method raises :class:`~agent.devices.errors.SemphonyApiError` on failure and
:class:`~agent.devices.errors.SemphonyGuardrailException` when the server's guardrails refuse a command.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar

__all__ = ["DeviceBackend"]


class DeviceBackend(ABC):
    """Runs, sessions, device attachment, capability invocation and artifact download, as coroutines."""

    #: The ``device.backend`` value that builds this backend. The autofocus policy keys its validation
    #: verdicts by it together with the instrument's identity.
    kind: ClassVar[str] = "unknown"

    @abstractmethod
    async def create_run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        """Create (or resume by name) a run: ``{id, name, status, system, metadata}``."""

    @abstractmethod
    async def get_run(self, run_id: int) -> dict[str, Any]:
        """One run."""

    @abstractmethod
    async def create_session(self, run_id: int) -> dict[str, Any]:
        """Open a session in a run: ``{id, run_id, status, ...}``."""

    @abstractmethod
    async def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """Finish a session (idempotent on the server)."""

    @abstractmethod
    async def set_guardrails(
        self, run_id: int, session_id: int, guardrails: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Install the session's guardrails on the server (``None`` removes them)."""

    @abstractmethod
    async def attach(
        self,
        run_id: int,
        session_id: int,
        *,
        device_slug: str | None,
        device_id: int | None,
        kind: str | None,
        force_close: bool = False,
    ) -> dict[str, Any]:
        """Attach a device to a session: ``{device_id, device_slug, kind, session_id}``."""

    @abstractmethod
    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Invoke a capability on the session's attached device and return its JSON result."""

    @abstractmethod
    async def download(self, image_id: str) -> bytes:
        """The bytes of an acquisition artifact."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (idempotent)."""

    async def __aenter__(self) -> DeviceBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
