"""``run_validation`` through the SDK on the simulator, and ``auto`` following the verdict it records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from agent.autofocus import AutofocusConfig
from agent.autofocus.ops import FocusOps
from agent.autofocus.policy import choose_auto_method, record_verdict
from agent.autofocus.validate import FocusPoint, ValidationOptions, run_validation, run_validation_async
from agent.devices.semphony import ImagingDevice, SemphonyClient
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.sem import SemSimulator
from testbed.semphony_server import SemphonyServer
from tests.conftest import import_optional

import_optional("torch", "EM_AGENT_REQUIRE_TORCH")

FAST = ValidationOptions(trials=2, seed=1, autofocus=AutofocusConfig(settle_s=0.0))


class Broken:
    """A device whose acquisitions fail: every trial must fail with the message and the validation finish."""

    def __init__(self, ops: FocusOps) -> None:
        self.ops = ops

    def get_focus_params(self) -> Mapping[str, float]:
        return self.ops.get_focus_params()

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        return self.ops.set_focus_params(wd_mm=wd_mm, stigm_x=stigm_x, stigm_y=stigm_y)

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> NDArray[np.float32]:
        raise RuntimeError("detector offline")


def open_device(client: SemphonyClient) -> ImagingDevice:
    device = ImagingDevice(client, device_slug="sem-001")
    device.attach(client.run("validate-test").session().start())
    return device


def truth(sim: SemSimulator) -> FocusPoint:
    ideal = sim.ideal_stigmator
    return FocusPoint(wd_mm=sim.true_focus_wd_mm(), stigm_x=ideal[0], stigm_y=ideal[1])


@pytest.fixture
def simulated(request: pytest.FixtureRequest) -> Iterator[tuple[ImagingDevice, SemSimulator]]:
    rotation = float(getattr(request, "param", 0.0))
    client = SemphonyClient.simulated(SimulatorConfig(seed=4, time_factor=0.0, stig_rotation_deg=rotation))
    try:
        yield open_device(client), client.backend.server.sem  # type: ignore[attr-defined]
    finally:
        client.close()


def test_learned_may_be_enabled_on_the_simulator(simulated: tuple[ImagingDevice, SemSimulator]) -> None:
    device, sim = simulated
    seen: list[Any] = []
    report = run_validation(
        device.imaging.focus_ops(), device.instrument_key(), FAST, reference=truth(sim), progress=seen.append
    )
    assert [(o.trial, o.method) for o in seen] == [
        (0, "learned"),
        (0, "classical"),
        (1, "learned"),
        (1, "classical"),
    ]
    v = report.verdict
    assert (v.backend, v.instrument) == ("simulator", "em-agent SEM simulator (serial sim-stigrot-0)")
    assert v.enabled, v.reason
    assert v.learned.successes == 2
    assert v.classical.successes == 2
    assert v.learned.images_median is not None
    assert v.classical.images_median is not None
    assert v.learned.images_median < v.classical.images_median
    for outcome in report.outcomes:
        assert outcome.success
        assert outcome.error is None
        assert outcome.final_wd_err_um is not None
        assert outcome.final_wd_err_um < FAST.wd_tol_um
        assert outcome.trace_images[0] == 0
        assert outcome.trace_images[-1] == outcome.images
        assert outcome.trace_wd_err_um[0] == pytest.approx(abs(outcome.start_offset[0]), rel=1e-6)
    # Both methods start from the same, seeded offsets; the instrument is left at the reference.
    assert report.outcomes[0].start_offset == report.outcomes[1].start_offset
    assert sim.focus_params()["wd_mm"] == pytest.approx(truth(sim).wd_mm)
    # The same seed gives the same starts (checked with a device whose acquisitions fail at once: fast).
    again = run_validation(
        Broken(device.imaging.focus_ops()), device.instrument_key(), FAST, reference=truth(sim)
    )
    assert [o.start_offset for o in again.outcomes] == [o.start_offset for o in report.outcomes]
    assert sim.focus_params()["wd_mm"] == pytest.approx(truth(sim).wd_mm)


@pytest.mark.parametrize("simulated", [90.0], indirect=True)
def test_a_column_the_network_never_saw_is_not_enabled(simulated: tuple[ImagingDevice, SemSimulator]) -> None:
    device, sim = simulated
    report = run_validation(device.imaging.focus_ops(), device.instrument_key(), FAST, reference=truth(sim))
    v = report.verdict
    assert v.instrument == "em-agent SEM simulator (serial sim-stigrot-90)"
    assert not v.enabled
    assert v.learned.successes == 0, "the stigmator rotation should defeat the simulator-trained network"
    assert v.classical.successes == 2, "the classical sweep does not depend on the stigmator axes"
    assert v.reason.startswith("not enabled")


def test_device_errors_are_failed_trials(simulated: tuple[ImagingDevice, SemSimulator]) -> None:
    device, sim = simulated
    report = run_validation(
        Broken(device.imaging.focus_ops()), device.instrument_key(), FAST, reference=truth(sim)
    )
    assert not report.verdict.enabled
    assert all(not o.success and o.error == "RuntimeError: detector offline" for o in report.outcomes)
    assert report.verdict.learned.errors == 2
    assert report.verdict.classical.first_error == "RuntimeError: detector offline"
    assert sim.focus_params()["wd_mm"] == pytest.approx(truth(sim).wd_mm)


# ---------------------------------------------------------------- auto follows the verdict (instruction path)


@pytest.fixture
async def over_http(tmp_path: Path) -> AsyncIterator[tuple[Any, Path, Any, SemSimulator]]:
    """The simulator behind a Semphony control server: backend 'semphony', so nothing is built in."""
    from agent.devices.http_backend import SemphonyHttpBackend
    from agent.instructions.config import ExecutorConfig
    from agent.instructions.context import HandlerContext, microscope_handle
    from agent.instructions.executor import Executor
    from agent.instructions.handlers import default_registry
    from agent.instructions.journal import InstructionJournal
    from agent.state.database import open_database

    with SemphonyServer(config=SimulatorConfig(seed=2, time_factor=0.0)) as server:
        handle = microscope_handle(SemphonyHttpBackend(server.url, server.api_key))
        db = open_database(tmp_path)
        state_dir = tmp_path / "state"
        context = HandlerContext(state_dir=state_dir, device=handle, journal=InstructionJournal(db))
        executor = Executor(ExecutorConfig(), InstructionJournal(db), default_registry(), context)
        try:
            yield executor, state_dir, handle, server.simulator
        finally:
            await handle.aclose()
            db.close()


async def test_auto_is_classical_until_a_positive_verdict_is_recorded(
    over_http: tuple[Any, Path, Any, SemSimulator],
) -> None:
    from agent.instructions.models import JournalEntry, Lane

    executor, state_dir, handle, sim = over_http

    async def autofocus() -> dict[str, Any]:
        payload = {"method": "auto", "max_iters": 1, "settle_s": 0}
        outcome = await executor.execute(
            JournalEntry(
                instruction_id="af",
                instruction_type="sem.autofocus",
                payload=payload,
                priority="normal",
                sequence_number=None,
                created_at=None,
                expires_at=None,
                lane=Lane.DEVICE,
                state="executing",
                deliveries=1,
                outcome=None,
                result_json=None,
                error_message=None,
                processing_time_ms=None,
                ack_state="none",
                ack_attempts=0,
                finished_at=None,
            )
        )
        assert outcome.result is not None, outcome
        return dict(outcome.result)

    first = await autofocus()
    assert first["method"] == "classical"
    assert "not validated on semphony: em-agent SEM simulator" in first["selection"]

    # The validation runs on the agent's own device session (the device lane the instructions use).
    one = FAST.model_copy(update={"trials": 1})  # each image crosses HTTP as a PNG: keep it short

    async def validate(d: Any) -> Any:
        return await run_validation_async(d.focus_ops(), await d.instrument_key(), one, reference=truth(sim))

    report = await handle.run(validate)
    assert report.verdict.backend == "semphony"
    assert report.verdict.enabled, report.verdict.reason
    record_verdict(state_dir, report.verdict)
    assert choose_auto_method(report.verdict.key, state_dir).method == "learned"

    second = await autofocus()
    assert second["method"] == "learned"
    assert second["selection"].startswith("auto: learned (validated on semphony: em-agent SEM simulator")
