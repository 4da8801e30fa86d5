"""Autofocus through the real device path: Semphony ImagingDevice over the in-process SEM simulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import semphony
from agent.autofocus import AutofocusConfig
from agent.devices.simulator import config as sim_config
from tests.conftest import import_optional


@pytest.fixture
def device() -> Iterator[Any]:
    client = semphony.SemphonyClient.simulated(sim_config.SimulatorConfig(seed=8, time_factor=0.0))
    try:
        with client.run("af-test").session() as session:
            sem = semphony.ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)
            yield sem, client.backend.server.sem
    finally:
        client.close()


@pytest.mark.parametrize("method", ["classical", "learned"])
def test_autofocus_through_the_sdk(device: Any, method: str) -> None:
    sem, sim = device
    if method == "learned":
        import_optional("torch", "EM_AGENT_REQUIRE_TORCH", module_level=False)
    true_wd = sim.true_focus_wd_mm()
    ideal = sim.ideal_stigmator
    sem.imaging.set_focus_params(wd_mm=true_wd + 0.020, stigm_x=ideal[0] + 0.5, stigm_y=ideal[1] - 0.3)
    size = 256 if method == "learned" else 128  # the learned corrector needs its trained field
    config = AutofocusConfig(method=method, settle_s=0.0, image_size_px=size, dwell_us=2.0, max_iters=3)
    result = sem.imaging.autofocus(config)
    assert result.method == method
    assert result.images == sum(t.images for t in result.trace)
    final = sem.imaging.get_focus_params()
    assert abs(final["wd_mm"] - true_wd) * 1e3 < 3.0
    assert abs(final["stigm_x"] - ideal[0]) < 0.3
    assert abs(final["stigm_y"] - ideal[1]) < 0.3
