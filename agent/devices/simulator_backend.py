"""The in-process backend: the Semphony control-server semantics over the SEM simulator, no network."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.devices.control_core import ControlCoreBackend
from agent.devices.simulator.control import SimulatedControlServer
from agent.devices.simulator_config import SimulatorConfig

__all__ = ["SimulatorBackend"]


class SimulatorBackend(ControlCoreBackend):
    """A :class:`~agent.devices.backend.DeviceBackend` that calls a :class:`SimulatedControlServer` directly.

    ``server`` is exposed so tests and the demo can inspect the simulator (``backend.server.sem``) or inject
    faults (``backend.server.acquire_timeouts = 1``).
    """

    kind = "simulator"

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        server: SimulatedControlServer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server or SimulatedControlServer(config, clock=clock)
        super().__init__(self.server)
