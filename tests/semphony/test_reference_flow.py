"""The SDK reference's flow, written as a user would from the reference alone, through the ``semphony`` import
path, against the testbed's Semphony-compatible control server over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import semphony
from agent.devices.simulator import SimulatorConfig
from semphony import Run, SemphonyClient, SemphonyGuardrailException
from semphony.client import SemphonyApiError
from semphony.models import AcquisitionConfig, AutofocusConfig, ImagingGuardrails, RoiSpec, load_roi_from_fs
from semphony.systems import DeformationDevice, ImagingDevice
from testbed.semphony_server import SemphonyServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[SemphonyServer]:
    with SemphonyServer(config=SimulatorConfig(time_factor=0.0, seed=3, human_auto_continue=True)) as srv:
        yield srv


def test_reference_example_flow(server: SemphonyServer, tmp_path: Path) -> None:
    client = SemphonyClient(server.url + "/", server.api_key)  # the trailing slash is stripped
    assert client.base_url == server.url
    try:
        run = semphony.run("reference-flow", client=client, metadata={"operator": "qa"}, system="sem-001")
        assert isinstance(run, Run)
        assert run.name == "reference-flow"
        assert run.status == "pending"
        assert client.run("reference-flow").id == run.id  # resume=True by default

        with run.session(guardrails=ImagingGuardrails()) as session:
            assert run.refresh().status == "running"
            sem = ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)

            assert set(sem.stage.move_to(1.0, 2.0)) >= {"x", "y", "z", "r", "t"}
            assert sem.stage.move_delta(dx=0.01, dy=-0.01)["x"] == pytest.approx(1.01)
            assert sem.stage.get_pos()["y"] == pytest.approx(1.99)
            assert sem.stage.get_latest_pos()["x"] == pytest.approx(1.01)

            sem.imaging.set_view_field(80.0)
            sem.imaging.set_focus_params(wd_mm=5.0)
            assert set(sem.imaging.get_focus_params()) == {"wd_mm", "stigm_x", "stigm_y"}
            sem.imaging.set_beam(True)
            assert sem.imaging.get_metrics()["beam"]["on"] is True

            geometries = sem.imaging.geometric_transformations
            assert geometries.list()
            geometries.set("tilt_correction", x=0.0)
            assert geometries.get("tilt_correction")["x"] == 0.0
            assert geometries.get(index=0)
            assert geometries.reset()["reset"]
            sem.imaging.centerings.set("beam_shift", x=0.0, y=0.0)
            assert sem.imaging.centerings.get("beam_shift")["y"] == 0.0

            config = AcquisitionConfig(fov_um=50, width=128, height=128)
            result = sem.acquire(config, download=True)
            assert result.image_bytes is not None
            assert result.image_bytes.startswith(b"\x89PNG")
            saved_path = client.download_image(result.image_id, target_path=str(tmp_path / "frame.png"))
            assert saved_path == str(tmp_path / "frame.png")
            assert client.download_image(result.image_id) == result.image_bytes
            with pytest.raises(SemphonyApiError):
                client.download_image(None)  # type: ignore[arg-type]

            roi_dir = tmp_path / "roi-1"
            saved = sem.imaging.save_roi(
                "roi-1",
                RoiSpec(l0_fov_um=80.0, l1_fov_um=20.0),
                config=AcquisitionConfig(width=128, height=128, dwell_us=0.5),
                target_dir=str(roi_dir),
                inter_level_delay_s=0,
            )
            assert load_roi_from_fs(str(roi_dir)).name == saved.name
            assert load_roi_from_fs(str(roi_dir / "manifest.json")).name == saved.name
            sem.stage.move_delta(dx=0.003, dy=-0.002)
            found = sem.imaging.find_roi(str(roi_dir), max_iters=4)
            assert found.roi_name == "roi-1"
            focused = sem.imaging.autofocus(
                AutofocusConfig(method="classical", max_iters=1, image_size_px=64, sweep_points=3, settle_s=0)
            )
            assert focused.iterations >= 1
            assert sem.imaging.await_human("load the sample")["continued"] is True

            with pytest.raises(SemphonyGuardrailException) as refused:
                sem.stage.move_to(500.0, 0.0)
            assert refused.value.guardrail_type == "stage_soft_limits"
            assert refused.value.details["axis"] == "x"

            tensile = DeformationDevice(client, device_slug="tensile-001")
            tensile.attach(session)
            status = client.invoke_capability(run.id, session.id, "DeformationStatus")
            assert set(status) >= {"displacement_um", "load_n"}

        assert session.closed
        session.close()  # idempotent
        assert run.refresh().status == "finished"
    finally:
        client.close()

    with SemphonyClient(server.url, "not-the-key") as stranger, pytest.raises(SemphonyApiError) as denied:
        stranger.run("x")
    assert denied.value.status_code == 401
    assert isinstance(denied.value, RuntimeError)


def test_the_package_imports_as_installed(tmp_path: Path) -> None:
    code = "from semphony import SemphonyClient; from semphony.systems import ImagingDevice; print('ok')"
    # From an unrelated folder, so the import comes from the installed package, not the source tree.
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
