"""The Semphony SDK surface, run over both backends (in-process simulator and HTTP control server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.devices.imageio import decode_png
from agent.devices.semphony import (
    AcquisitionConfig,
    DeformationDevice,
    ImagingDevice,
    SemphonyApiError,
    SemphonyClient,
    Session,
    run,
)
from tests.agent.devices.conftest import Rig


def test_run_create_resume_and_metadata(rig: Rig) -> None:
    first = rig.client.run("exp", metadata={"grid": 1})
    again = rig.client.run("exp", metadata={"user": "a"})
    fresh = run("exp", client=rig.client, resume=False)
    assert again.id == first.id
    assert again.metadata == {"grid": 1, "user": "a"}
    assert fresh.id != first.id
    assert first.name == "exp"
    assert first.status == "pending"


def test_run_system_must_exist(rig: Rig) -> None:
    with pytest.raises(SemphonyApiError) as err:
        rig.client.run("exp", system="tescan-404")
    assert err.value.status_code == 404


def test_session_lifecycle_is_idempotent(rig: Rig) -> None:
    r = rig.client.run("lifecycle")
    session = r.session()
    with pytest.raises(SemphonyApiError):
        _ = session.id
    assert session.start() is session.start()
    assert r.status == "running"
    session.close()
    session.close()
    assert r.status == "finished"
    with pytest.raises(SemphonyApiError):
        session.start()


def test_device_must_be_attached(rig: Rig, session: Session) -> None:
    device = ImagingDevice(rig.client, device_slug="sem-001")
    with pytest.raises(SemphonyApiError, match="attach"):
        device.stage.get_pos()
    with pytest.raises(ValueError):
        ImagingDevice(rig.client)


def test_attach_unknown_or_wrong_kind(rig: Rig, session: Session) -> None:
    with pytest.raises(SemphonyApiError) as unknown:
        ImagingDevice(rig.client, device_slug="nope").attach(session)
    assert unknown.value.status_code == 404
    with pytest.raises(SemphonyApiError) as wrong:
        ImagingDevice(rig.client, device_slug="tensile-001").attach(session)
    assert wrong.value.status_code == 400


def test_attach_held_device_needs_force_close(rig: Rig, sem: ImagingDevice, session: Session) -> None:
    other = rig.client.run("other").session().start()
    intruder = ImagingDevice(rig.client, device_id=sem.device_id)
    with pytest.raises(SemphonyApiError) as held:
        intruder.attach(other)
    assert held.value.status_code == 409
    intruder.attach(other, force_close=True)
    assert intruder.stage.get_pos()["x"] == 0.0
    with pytest.raises(SemphonyApiError):  # the first session was closed by force
        sem.stage.get_pos()


def test_stage_moves_and_positions(sem: ImagingDevice) -> None:
    assert sem.stage.get_pos() == {"x": 0.0, "y": 0.0, "z": 10.0, "r": 0.0, "t": 0.0}
    assert sem.stage.move_to(1.5, -2.0, z=11.0, r=30.0)["z"] == 11.0
    moved = sem.stage.move_delta(dx=0.01, dy=-0.02, dr=5.0)
    assert moved["x"] == pytest.approx(1.51)
    assert moved["y"] == pytest.approx(-2.02)
    assert moved["r"] == pytest.approx(35.0)
    assert sem.stage.get_latest_pos()["x"] == pytest.approx(1.51)


def test_focus_view_field_beam_metrics(sem: ImagingDevice) -> None:
    assert set(sem.imaging.get_focus_params()) == {"wd_mm", "stigm_x", "stigm_y"}
    assert sem.imaging.set_focus_params(wd_mm=5.01) == {"wd_mm": 5.01, "stigm_x": 0.0, "stigm_y": 0.0}
    assert sem.imaging.set_focus_params(stigm_y=0.3)["wd_mm"] == 5.01
    assert sem.imaging.set_view_field(25.0) == {"fov_um": 25.0}
    assert sem.imaging.set_beam(False) == {"beam_on": False}
    metrics = sem.imaging.get_metrics()
    assert metrics["beam"]["on"] is False
    assert metrics["optics"]["fov_um"] == 25.0
    assert metrics["optics"]["magnification"] == pytest.approx(0.127 / 25e-6)
    assert metrics["vacuum"]["state"] == "pumped"
    assert metrics["stage"]["x"] == 0.0


def test_vent_and_pump(sem: ImagingDevice) -> None:
    sem.imaging.set_beam(False)
    assert sem.chamber.vent()["vacuum"] == "vented"
    assert sem.imaging.get_metrics()["vacuum"]["state"] == "vented"
    assert sem.chamber.pump()["vacuum"] == "pumped"
    assert sem.imaging.set_beam(True) == {"beam_on": True}


def test_geometries_by_fuzzy_name_or_index(sem: ImagingDevice) -> None:
    geo = sem.imaging.geometric_transformations
    listing = geo.list()
    assert listing["1"]["name"] == "Tilt Correction"
    assert geo.get("tilt_correction")["index"] == 1
    assert geo.get(index=1)["name"] == "Tilt Correction"
    assert geo.get(name="IMAGE shift")["index"] == 0
    assert geo.set("tilt_correction", x=12.5)["x"] == 12.5
    assert geo.set(0, x=1.0, y=-2.0) | {} == geo.get("image shift")
    assert geo.reset() == {"reset": [0, 1, 2, 3]}
    assert geo.get(1)["x"] == 0.0
    with pytest.raises(SemphonyApiError) as unknown:
        geo.get("warp drive")
    assert unknown.value.status_code == 404
    with pytest.raises(SemphonyApiError):
        geo.set("tilt_correction", x=1000.0)  # outside the entry's limits
    with pytest.raises(ValueError):
        geo.get("tilt", index=1)


def test_centerings(sem: ImagingDevice) -> None:
    cen = sem.imaging.centerings
    assert cen.list()["0"]["name"] == "Beam Shift"
    assert cen.set("beam_shift", x=0.5, y=-0.5)["y"] == -0.5
    assert cen.get("BEAM-SHIFT")["x"] == 0.5
    with pytest.raises(SemphonyApiError):
        cen.get("gun")  # ambiguous: Gun Shift / Gun Tilt


def test_acquire_download_and_save(sem: ImagingDevice, rig: Rig, tmp_path: Path) -> None:
    config = AcquisitionConfig(fov_um=40.0, width=128, height=96, dwell_us=0.5, name="first")
    result = sem.acquire(config, download=True)
    assert result.image_id is not None
    assert (result.width, result.height, result.fov_um) == (128, 96, 40.0)
    assert result.pixel_size_nm == pytest.approx(40_000 / 128)
    image = result.to_array()
    assert image.shape == (96, 128)
    assert image.dtype == np.float32
    assert 0.05 < float(image.mean()) < 0.95
    saved = sem.imaging.acquire(config, target_path=str(tmp_path / "a" / "img.png"))
    assert saved.image_path == str(tmp_path / "a" / "img.png")
    assert decode_png(Path(saved.image_path).read_bytes()).shape == (96, 128)
    blob = rig.client.download_image(saved.image_id)
    assert isinstance(blob, bytes)
    assert blob == Path(saved.image_path).read_bytes()
    with pytest.raises(SemphonyApiError):
        rig.client.download_image(None)
    with pytest.raises(SemphonyApiError) as missing:
        rig.client.download_image("img-999999")
    assert missing.value.status_code == 404


def test_acquire_8_bit(sem: ImagingDevice) -> None:
    result = sem.acquire(AcquisitionConfig(width=64, height=64, bit_depth=8), download=True)
    assert result.image_bytes is not None
    assert decode_png(result.image_bytes).dtype == np.uint8


def test_acquire_needs_the_beam(sem: ImagingDevice) -> None:
    sem.imaging.set_beam(False)
    with pytest.raises(SemphonyApiError) as err:
        sem.acquire(AcquisitionConfig(width=64, height=64))
    assert err.value.status_code == 409


def test_acquire_retries_twice_on_504(sem: ImagingDevice, rig: Rig) -> None:
    rig.core.acquire_timeouts = 2
    result = sem.acquire(AcquisitionConfig(width=64, height=64))
    assert result.image_id is not None
    assert rig.core.action_counts()["Acquire"] == 1
    rig.core.acquire_timeouts = 3
    with pytest.raises(SemphonyApiError) as err:
        sem.acquire(AcquisitionConfig(width=64, height=64))
    assert err.value.status_code == 504
    assert rig.core.action_counts()["Acquire"] == 1


def test_get_latest_pos_stale_is_409(sem: ImagingDevice, rig: Rig) -> None:
    with pytest.raises(SemphonyApiError) as never:
        sem.stage.get_latest_pos()  # nothing reported yet
    assert never.value.status_code == 409
    sem.stage.get_pos()
    rig.core.stale_latest_positions = 1
    with pytest.raises(SemphonyApiError) as stale:
        sem.stage.get_latest_pos()
    assert stale.value.status_code == 409
    assert sem.stage.get_latest_pos()["x"] == 0.0


def test_invalid_payload_is_400(sem: ImagingDevice, rig: Rig, session: Session) -> None:
    with pytest.raises(SemphonyApiError) as err:
        rig.client.invoke_capability(session.run.id, session.id, "StageMoveTo", {"x": "far", "y": 0})
    assert err.value.status_code == 400
    with pytest.raises(SemphonyApiError) as extra:
        rig.client.invoke_capability(session.run.id, session.id, "SetViewField", {"fov_um": 5, "zoom": 2})
    assert extra.value.status_code == 400
    with pytest.raises(SemphonyApiError) as unknown:
        rig.client.invoke_capability(session.run.id, session.id, "SelfDestruct", {})
    assert unknown.value.status_code == 404
    assert rig.core.action_counts() == {}


def test_await_human_auto_continue(sem: ImagingDevice, rig: Rig) -> None:
    answer = sem.imaging.await_human("load the grid")
    assert answer["continued"] is True
    assert rig.core.action_counts()["AwaitHuman"] == 1


def test_deformation_device(rig: Rig, session: Session) -> None:
    stage = DeformationDevice(rig.client, device_slug="tensile-001")
    stage.attach(session)
    assert stage.status()["displacement_um"] == 0.0
    moved = stage.move(displacement_um=100.0)
    assert moved["load_n"] == pytest.approx(100.0 * 0.02)
    assert stage.move(delta_um=-40.0)["displacement_um"] == pytest.approx(60.0)
    assert stage.invoke("DeformationStatus")["displacement_um"] == pytest.approx(60.0)
    with pytest.raises(SemphonyApiError):
        stage.move(displacement_um=-1.0)


def test_closed_client_refuses_calls(rig: Rig) -> None:
    rig.client.close()
    with pytest.raises(SemphonyApiError, match="closed"):
        rig.client.run("late")


def test_sync_sdk_refuses_to_block_a_running_loop() -> None:
    client = SemphonyClient.simulated()
    try:

        async def misuse() -> None:
            client.run("x")

        import asyncio

        with pytest.raises(RuntimeError, match="to_thread"):
            asyncio.run(misuse())

        async def proper() -> int:
            return (await asyncio.to_thread(client.run, "x")).id

        assert asyncio.run(proper()) >= 1
    finally:
        client.close()


def test_imaging_connection_opens_lazily_and_reopens(rig: Rig) -> None:
    from agent.devices.connection import ImagingConnection

    connection = ImagingConnection(rig.client, run_name="agent")
    assert connection.session is None
    device = connection.device()
    assert connection.device() is device
    assert device.stage.move_to(1.0, 1.0)["x"] == 1.0
    with pytest.raises(Exception, match="stage_soft_limits"):
        device.stage.move_to(100.0, 0.0)  # guardrails are on by default
    connection.reset()
    reopened = connection.device()
    assert reopened is not device
    assert reopened.stage.get_pos()["x"] == 1.0
    # A second agent takes the device over (force_close) without an operator.
    other = ImagingConnection(rig.client, run_name="agent")
    assert other.device().stage.get_pos()["y"] == 1.0
    connection.close()


def test_focus_ops_adapter_implements_the_autofocus_protocol(sem: ImagingDevice) -> None:
    from agent.autofocus.ops import FocusOps
    from agent.devices.semphony.systems import _FocusOpsAdapter

    ops = _FocusOpsAdapter(sem.imaging)
    assert isinstance(ops, FocusOps)
    ops.set_focus_params(wd_mm=5.002, stigm_x=0.1)
    assert ops.get_focus_params() == {"wd_mm": 5.002, "stigm_x": 0.1, "stigm_y": 0.0}
    image = ops.acquire_image(fov_um=2.56, shape=(48, 64), dwell_s=1e-6)
    assert image.shape == (48, 64)
    assert image.dtype == np.float32
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_the_device_layer_sdk_loads_neither_roi_nor_autofocus() -> None:
    """Autofocus and ROI navigation sit above the devices: the top-level semphony package adds them."""
    code = (
        "import sys\n"
        "import agent.devices.semphony\n"
        "assert not any(m.startswith(('agent.roi', 'agent.autofocus')) for m in sys.modules), sorted(sys.modules)\n"
        "from semphony.systems import ImagingDevice\n"
        "assert callable(ImagingDevice.__init__) and hasattr(ImagingDevice._imaging_class, 'find_roi')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "ok"
