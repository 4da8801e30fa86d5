"""Fixtures: a Semphony client over each backend (in-process simulator, HTTP through the testbed server, and,
where a test asks for it, OpenFIBSEM's DemoMicroscope)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from agent.devices.control_core import ControlCore
from agent.devices.openfibsem import OpenFibsemBackend
from agent.devices.semphony import ImagingDevice, ImagingGuardrails, ImagingInterface, SemphonyClient, Session
from agent.devices.simulator import SimulatedControlServer, SimulatorConfig
from agent.devices.simulator_backend import SimulatorBackend
from testbed.semphony_server import SemphonyServer

FAST = SimulatorConfig(time_factor=0.0, seed=7)


@dataclass
class Rig:
    """A client, the control-server core behind it, and (for HTTP) the server."""

    client: SemphonyClient
    core: SimulatedControlServer | ControlCore
    server: SemphonyServer | None


def hanging_client() -> tuple[SemphonyClient, threading.Event]:
    """An HTTP Semphony client whose every request hangs, and an event set once a request is in progress."""
    entered = threading.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return SemphonyClient("http://semphony.invalid", "key", transport=httpx.MockTransport(hang)), entered


@pytest.fixture(autouse=True)
def _fast_acquire_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImagingInterface, "acquire_retry_delay_s", 0.0)


def make_rig(kind: str, config: SimulatorConfig = FAST) -> Iterator[Rig]:
    """Yield a rig of ``kind`` ('simulator', 'http' or 'openfibsem') and tear it down."""
    if kind == "openfibsem":
        of_backend = OpenFibsemBackend()
        client = SemphonyClient.from_backend(of_backend)
        try:
            yield Rig(client, of_backend.server, None)
        finally:
            client.close()
        return
    if kind == "simulator":
        backend = SimulatorBackend(config)
        client = SemphonyClient.from_backend(backend)
        try:
            yield Rig(client, backend.server, None)
        finally:
            client.close()
        return
    with SemphonyServer(config=config) as server:
        client = SemphonyClient(server.url, server.api_key)
        try:
            yield Rig(client, server.core, server)
        finally:
            client.close()


@pytest.fixture(params=["simulator", "http"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A rig over each backend (tests add 'openfibsem' with ``parametrize(..., indirect=True)``)."""
    if request.param == "openfibsem":
        request.getfixturevalue("openfibsem_demo")
    yield from make_rig(str(request.param))


@pytest.fixture
def session(rig: Rig) -> Iterator[Session]:
    """A started session with default guardrails."""
    with rig.client.run("tests").session(guardrails=ImagingGuardrails()) as s:
        yield s


@pytest.fixture
def sem(rig: Rig, session: Session) -> ImagingDevice:
    """The simulated SEM attached to ``session``."""
    device = ImagingDevice(rig.client, device_slug="sem-001")
    device.attach(session)
    return device
