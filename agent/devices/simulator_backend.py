"""The in-process backend: the Semphony control-server semantics over the SEM simulator, no network."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.devices.backend import DeviceBackend
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.control import SimulatedControlServer

__all__ = ["SimulatorBackend"]


class SimulatorBackend(DeviceBackend):
    """A :class:`DeviceBackend` that calls a :class:`SimulatedControlServer` directly.

    ``server`` is exposed so tests and the demo can inspect the simulator (``backend.server.sem``) or inject
    faults (``backend.server.acquire_timeouts = 1``).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        server: SimulatedControlServer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server or SimulatedControlServer(config, clock=clock)

    async def create_run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_run`."""
        return self.server.create_run(name, resume=resume, metadata=metadata, system=system)

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.get_run`."""
        return self.server.get_run(run_id)

    async def create_session(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_session`."""
        return self.server.create_session(run_id)

    async def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.close_session`."""
        return self.server.close_session(run_id, session_id)

    async def set_guardrails(
        self, run_id: int, session_id: int, guardrails: dict[str, Any] | None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.set_guardrails`."""
        return self.server.set_guardrails(run_id, session_id, guardrails)

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
        """See :meth:`DeviceBackend.attach`."""
        return self.server.attach(
            run_id,
            session_id,
            device_slug=device_slug,
            device_id=device_id,
            kind=kind,
            force_close=force_close,
        )

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.invoke`."""
        return await self.server.invoke(run_id, session_id, capability_id, payload)

    async def download(self, image_id: str) -> bytes:
        """See :meth:`DeviceBackend.download`."""
        return self.server.image(image_id).png

    async def close(self) -> None:
        """Nothing to release in process."""
