"""The one switch between device backends: ``"simulator"`` (in process), ``"semphony"`` (HTTP) or
``"openfibsem"`` (OpenFIBSEM in process)."""

from __future__ import annotations

from typing import Literal

from agent.devices.backend import DeviceBackend
from agent.devices.http_backend import SemphonyHttpBackend
from agent.devices.openfibsem.backend import OpenFibsemBackend
from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.semphony.client import SemphonyClient
from agent.devices.simulator_backend import SimulatorBackend
from agent.devices.simulator_config import SimulatorConfig

__all__ = ["BackendKind", "create_backend", "create_client", "true_focus"]

BackendKind = Literal["simulator", "semphony", "openfibsem"]


def create_backend(
    kind: BackendKind | str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    simulator: SimulatorConfig | None = None,
    timeout: float = 60.0,
    openfibsem: OpenFibsemConfig | None = None,
    device_slug: str = "sem-001",
) -> DeviceBackend:
    """Build the backend ``kind`` names (the value of the ``device.backend`` setting).

    ``"semphony"`` needs ``url`` and ``api_key``; ``"simulator"`` takes an optional :class:`SimulatorConfig`;
    ``"openfibsem"`` an optional :class:`OpenFibsemConfig` and the slug its microscope is attached by.
    """
    if kind == "simulator":
        return SimulatorBackend(simulator)
    if kind == "openfibsem":
        return OpenFibsemBackend(openfibsem, device_slug=device_slug)
    if kind == "semphony":
        if not url or not api_key:
            raise ValueError("device backend 'semphony' needs a URL and an API key")
        return SemphonyHttpBackend(url, api_key, timeout=timeout)
    raise ValueError(f"unknown device backend {kind!r}; expected 'simulator', 'semphony' or 'openfibsem'")


def create_client(
    kind: BackendKind | str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    simulator: SimulatorConfig | None = None,
    timeout: float = 60.0,
    openfibsem: OpenFibsemConfig | None = None,
    device_slug: str = "sem-001",
) -> SemphonyClient:
    """A :class:`SemphonyClient` over :func:`create_backend`'s backend."""
    backend = create_backend(
        kind,
        url=url,
        api_key=api_key,
        simulator=simulator,
        timeout=timeout,
        openfibsem=openfibsem,
        device_slug=device_slug,
    )
    return SemphonyClient.from_backend(backend)


def true_focus(backend: DeviceBackend) -> tuple[float, float, float] | None:
    """The in-focus settings ``(wd_mm, stigm_x, stigm_y)`` where the backend knows them, else None.

    Only the simulator does (its hidden truth); `em-agent autofocus validate` scores trials against it there and
    against the focus found at the start on a real instrument. Asked here so that no module but the factory
    needs to know the simulator's type.
    """
    if not isinstance(backend, SimulatorBackend):
        return None
    sim = backend.server.sem
    ideal = sim.ideal_stigmator
    return (sim.true_focus_wd_mm(), ideal[0], ideal[1])
