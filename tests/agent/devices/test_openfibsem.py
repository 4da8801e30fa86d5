"""The openfibsem backend against OpenFIBSEM's own DemoMicroscope (not written by us), through the SDK.

Units are checked on the demo's internal state (SI), declines carry their reason and move nothing, and a
call that hangs in OpenFIBSEM neither blocks later calls for ever nor holds up closing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.autofocus.models import AutofocusConfig
from agent.devices.capabilities import Capability
from agent.devices.errors import SemphonyApiError, SemphonyUnsupportedError
from agent.devices.imageio import decode_png
from agent.devices.openfibsem import DEMO_UNSUPPORTED, OpenFibsemBackend, OpenFibsemConfig, connect_microscope
from agent.devices.openfibsem.instrument import vacuum_state
from agent.devices.openfibsem.worker import DeviceWorker
from agent.devices.semphony import (
    AcquisitionConfig,
    DeformationDevice,
    ImagingGuardrails,
    SemphonyClient,
    Session,
)
from agent.roi.models import RoiSpec
from semphony.systems import ImagingDevice  # with autofocus and ROI navigation

pytestmark = pytest.mark.usefixtures("openfibsem_demo")


def demo_microscope() -> Any:
    """A connected DemoMicroscope from OpenFIBSEM's default configuration."""
    return connect_microscope(OpenFibsemConfig())


@pytest.fixture
def backend() -> OpenFibsemBackend:
    return OpenFibsemBackend()


@pytest.fixture
def client(backend: OpenFibsemBackend) -> Iterator[SemphonyClient]:
    with SemphonyClient.from_backend(backend) as c:
        yield c


@pytest.fixture
def session(client: SemphonyClient) -> Iterator[Session]:
    with client.run("openfibsem-tests").session(guardrails=ImagingGuardrails()) as s:
        yield s


@pytest.fixture
def sem(client: SemphonyClient, session: Session) -> ImagingDevice:
    device = ImagingDevice(client, device_slug="sem-001")
    device.attach(session)
    return device


def demo(backend: OpenFibsemBackend) -> Any:
    assert backend.server.instrument is not None
    return backend.server.instrument.microscope


def test_stage_focus_fov_and_shift_convert_units(sem: ImagingDevice, backend: OpenFibsemBackend) -> None:
    m = demo(backend)
    moved = sem.stage.move_to(1.5, -2.0, z=3.0, r=30.0)
    assert moved == pytest.approx({"x": 1.5, "y": -2.0, "z": 3.0, "r": 30.0, "t": 0.0})
    raw = m.stage_system.position
    assert (raw.x, raw.y, raw.z) == pytest.approx((1.5e-3, -2.0e-3, 3.0e-3))
    assert raw.r == pytest.approx(math.radians(30.0))
    moved = sem.stage.move_delta(0.02, 0.01, dt=2.0)
    assert moved["x"] == pytest.approx(1.52)
    assert m.stage_system.position.t == pytest.approx(math.radians(2.0))

    assert sem.imaging.set_focus_params(wd_mm=5.5, stigm_x=0.25)["wd_mm"] == pytest.approx(5.5)
    assert m.electron_system.beam.working_distance == pytest.approx(5.5e-3)
    assert (m.electron_system.beam.stigmation.x, m.electron_system.beam.stigmation.y) == (0.25, 0.0)
    assert sem.imaging.set_view_field(42.0) == {"fov_um": pytest.approx(42.0)}
    assert m.electron_system.beam.hfw == pytest.approx(42e-6)

    shift = sem.imaging.centerings.set("beam_shift", x=1.5, y=-0.5)
    assert (shift["x"], shift["y"]) == pytest.approx((1.5, -0.5))
    assert m.electron_system.beam.shift.x == pytest.approx(1.5e-6)
    rotation = sem.imaging.geometric_transformations.set("scan rotation", x=90.0)
    assert rotation["x"] == pytest.approx(90.0)
    assert m.electron_system.beam.scan_rotation == pytest.approx(math.pi / 2)
    assert sem.imaging.geometric_transformations.reset() == {"reset": [0]}
    assert m.electron_system.beam.scan_rotation == 0.0

    metrics = sem.imaging.get_metrics()
    assert metrics["instrument"]["model"] == "DemoMicroscope"
    assert metrics["optics"]["fov_um"] == pytest.approx(42.0)
    assert sem.stage.get_latest_pos()["x"] == pytest.approx(1.52)


def test_beam_and_vacuum_reach_the_demo(sem: ImagingDevice, backend: OpenFibsemBackend) -> None:
    m = demo(backend)
    assert sem.imaging.set_beam(False) == {"beam_on": False}
    assert m.electron_system.on is False
    assert sem.chamber.vent()["vacuum"] == "vented"
    assert m.chamber.state == "Vented"
    assert sem.chamber.pump()["vacuum"] == "pumped"
    assert sem.imaging.set_beam(True) == {"beam_on": True}
    assert m.electron_system.on is True


def test_acquire_returns_and_stores_the_image(
    sem: ImagingDevice, client: SemphonyClient, tmp_path: Path
) -> None:
    result = sem.imaging.acquire(
        AcquisitionConfig(fov_um=30.0, width=96, height=64, dwell_us=0.5), download=True
    )
    assert (result.width, result.height) == (96, 64)
    assert result.fov_um == pytest.approx(30.0)
    assert result.pixel_size_nm == pytest.approx(30_000 / 96)
    assert result.bit_depth == 8  # the demo's frames are 8-bit; reported as they are
    assert result.to_array().shape == (64, 96)
    assert result.image_id is not None
    stored = client.download_image(result.image_id, target_path=str(tmp_path / "frame.png"))
    assert decode_png(Path(str(stored)).read_bytes()).shape == (64, 96)


def test_what_openfibsem_cannot_express_is_declined_with_the_reason(
    sem: ImagingDevice, client: SemphonyClient, session: Session, backend: OpenFibsemBackend
) -> None:
    before = sem.stage.get_pos()
    for call in (
        lambda: sem.imaging.await_human("load the sample"),
        lambda: sem.imaging.geometric_transformations.set("tilt corr", x=1.0),
        lambda: sem.imaging.geometric_transformations.get("image shift"),
        lambda: sem.imaging.centerings.set("gun tilt", x=1.0, y=1.0),
        lambda: client.invoke_capability(session.run.id, session.id, Capability.DEFORMATION_STATUS),
    ):
        with pytest.raises(SemphonyUnsupportedError) as err:
            call()
        assert err.value.status_code == 501
        assert "OpenFIBSEM" in err.value.reason
    with pytest.raises(SemphonyApiError) as no_stage:
        DeformationDevice(client, device_slug="tensile-001").attach(session)
    assert no_stage.value.status_code == 404
    assert sem.unsupported == dict(DEMO_UNSUPPORTED)
    with pytest.raises(SemphonyUnsupportedError, match="working distance"):
        sem.imaging.autofocus(AutofocusConfig(method="classical", max_iters=1, image_size_px=64))
    with pytest.raises(SemphonyUnsupportedError, match="stage"):
        sem.imaging.find_roi("/nonexistent/roi")
    assert [c for _, c in backend.server.invocations] == []
    assert sem.stage.get_pos() == before


def test_save_roi_captures_the_demo_frames(sem: ImagingDevice, tmp_path: Path) -> None:
    saved = sem.imaging.save_roi(
        "demo-roi",
        RoiSpec(l0_fov_um=80.0, l1_fov_um=20.0),
        config=AcquisitionConfig(width=64, height=64),
        target_dir=str(tmp_path / "demo-roi"),
        inter_level_delay_s=0,
    )
    assert (tmp_path / "demo-roi" / "manifest.json").is_file()
    assert len(saved.levels) == 2


def test_connection_errors_are_clear(tmp_path: Path) -> None:
    for config, status, words in (
        (OpenFibsemConfig(manufacturer="Zeiss"), 400, "Zeiss"),
        (OpenFibsemConfig(configuration=tmp_path / "missing.yaml"), 400, "not found"),
    ):
        with SemphonyClient.from_backend(OpenFibsemBackend(config)) as client:
            session = client.run("bad").session().start()
            with pytest.raises(SemphonyApiError) as err:
                ImagingDevice(client, device_slug="sem-001").attach(session)
        assert err.value.status_code == status
        assert words in str(err.value)


def test_vacuum_states_are_normalised() -> None:
    assert vacuum_state("Pumped") == "pumped"
    assert vacuum_state("Venting") == "venting"
    assert vacuum_state(3) == "unknown (3)"


def hanging_demo(release: threading.Event, entered: threading.Event) -> Any:
    """A DemoMicroscope whose relative stage moves block until ``release`` is set."""
    microscope = demo_microscope()
    original = microscope.move_stage_relative

    def stuck(position: Any) -> Any:
        entered.set()
        release.wait()
        return original(position)

    microscope.move_stage_relative = stuck
    return microscope


def test_a_call_past_its_limit_fails_and_later_calls_are_refused_until_it_ends() -> None:
    release, entered = threading.Event(), threading.Event()
    config = OpenFibsemConfig(call_timeout_s=0.3)
    backend = OpenFibsemBackend(config, connect=lambda: hanging_demo(release, entered))
    with SemphonyClient.from_backend(backend) as client:
        session = client.run("hang").session().start()
        sem = ImagingDevice(client, device_slug="sem-001")
        sem.attach(session)
        with pytest.raises(SemphonyApiError) as late:
            sem.stage.move_delta(0.001, 0.0)
        assert late.value.status_code == 504
        with pytest.raises(SemphonyApiError) as busy:
            sem.stage.get_pos()
        assert busy.value.status_code == 503
        assert "relative stage move" in str(busy.value)
        release.set()
        deadline = time.monotonic() + 5
        while backend.server.worker.busy_overdue is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sem.stage.get_pos()["x"] == pytest.approx(0.001)  # the late move did land


def test_closing_is_bounded_while_a_call_hangs_for_ever() -> None:
    release, entered = threading.Event(), threading.Event()
    backend = OpenFibsemBackend(
        OpenFibsemConfig(call_timeout_s=600), connect=lambda: hanging_demo(release, entered)
    )
    client = SemphonyClient.from_backend(backend)
    session = client.run("hang").session().start()
    sem = ImagingDevice(client, device_slug="sem-001")
    sem.attach(session)
    outcome: list[BaseException] = []

    def move() -> None:
        try:
            sem.stage.move_delta(0.001, 0.0)
        except BaseException as exc:
            outcome.append(exc)

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    assert entered.wait(5)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 5
    mover.join(5)
    assert not mover.is_alive()
    assert isinstance(outcome[0], SemphonyApiError)
    release.set()


async def test_worker_runs_in_order_and_reports_errors() -> None:
    worker = DeviceWorker("test-worker")
    order: list[int] = []
    try:
        assert await worker.call("one", lambda: order.append(1) or 1, timeout_s=5) == 1
        with pytest.raises(ZeroDivisionError):
            await worker.call("boom", lambda: 1 / 0, timeout_s=5)
        assert await worker.call("two", lambda: order.append(2) or 2, timeout_s=5) == 2
        assert order == [1, 2]
    finally:
        worker.close()
    with pytest.raises(SemphonyApiError) as closed:
        await worker.call("late", lambda: None, timeout_s=5)
    assert closed.value.status_code == 503
