"""The one backend switch."""

from __future__ import annotations

import pytest

from agent.devices import (
    SemphonyHttpBackend,
    SimulatorConfig,
    create_backend,
    create_client,
)
from agent.devices.semphony import ImagingDevice
from agent.devices.simulator_backend import SimulatorBackend
from testbed.semphony_server import SemphonyServer


def test_switch_picks_the_backend() -> None:
    assert isinstance(create_backend("simulator", simulator=SimulatorConfig(seed=2)), SimulatorBackend)
    http = create_backend("semphony", url="http://127.0.0.1:1", api_key="k")
    assert isinstance(http, SemphonyHttpBackend)
    with pytest.raises(ValueError, match="URL and an API key"):
        create_backend("semphony", url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="unknown device backend"):
        create_backend("tem")


@pytest.mark.parametrize("kind", ["simulator", "semphony"])
def test_same_code_over_either_backend(kind: str) -> None:
    config = SimulatorConfig(time_factor=0.0)
    with SemphonyServer(config=config) as server:
        client = create_client(kind, url=server.url, api_key=server.api_key, simulator=config)
        with client, client.run("switch").session() as session:
            sem = ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)
            assert sem.stage.move_to(0.5, 0.5)["x"] == 0.5
        assert server.action_counts() == ({"StageMoveTo": 1} if kind == "semphony" else {})
