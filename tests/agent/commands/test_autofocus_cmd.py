"""``em-agent autofocus validate`` end to end: the simulator, a column the network never saw, the OpenFIBSEM demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.autofocus.policy import InstrumentKey, choose_auto_method, find_verdict
from agent.cli import main
from tests.conftest import import_optional

import_optional("torch", "EM_AGENT_REQUIRE_TORCH")

FAST = ["--trials", "1", "--settle-s", "0"]


@pytest.fixture(autouse=True)
def instant_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_AGENT_DEVICE__SIMULATOR_TIME_FACTOR", "0")


def test_validate_on_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "traces.png"
    rc = main(
        [
            "autofocus",
            "validate",
            "--device",
            "simulator",
            "--state-dir",
            str(tmp_path),
            "--png",
            str(png),
            *FAST,
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "instrument: simulator: em-agent SEM simulator (serial sim-stigrot-0)" in out
    assert "(the simulator's true focus)" in out
    table = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith("in focus")}
    assert table["in focus"][-4:] == ["1/1", "(100%)", "1/1", "(100%)"]
    assert "verdict: learned autofocus may be enabled" in out
    assert f"traces: {png}" in out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "trial 1/1 learned: in focus" in err
    key = InstrumentKey("simulator", "em-agent SEM simulator (serial sim-stigrot-0)")
    verdict = find_verdict(tmp_path, key)
    assert verdict is not None
    assert verdict.enabled
    assert verdict.png == str(png)
    assert choose_auto_method(key, tmp_path).method == "learned"


def test_validate_on_a_column_the_network_never_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{tmp_path.as_posix()}"\n[device]\nbackend = "simulator"\nsimulator_stig_rotation_deg = 90.0\n',
        encoding="utf-8",
    )
    rc = main(["autofocus", "validate", "--config", str(config), "--json", *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    verdict = report["verdict"]
    assert verdict["instrument"] == "em-agent SEM simulator (serial sim-stigrot-90)"
    assert not verdict["enabled"]
    assert verdict["reason"].startswith("not enabled")
    assert verdict["learned"]["successes"] == 0
    assert verdict["classical"]["successes"] == 1
    assert Path(verdict["png"]).is_file()
    assert Path(report["record"]) == tmp_path / "autofocus" / "validation.json"
    choice = choose_auto_method(InstrumentKey("simulator", verdict["instrument"]), tmp_path)
    assert choice.method == "classical"
    assert "not enabled on simulator" in choice.reason


def test_validate_needs_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["autofocus", "validate", "--state-dir", str(tmp_path), *FAST])
    assert rc == 78
    assert "no device configured" in capsys.readouterr().err
    assert not (tmp_path / "autofocus").exists()


@pytest.mark.usefixtures("openfibsem_demo")
def test_validate_on_the_openfibsem_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The demo's frames are noise that does not depend on focus: neither method can focus it, and the report
    # must say so rather than crash or enable anything.
    rc = main(["autofocus", "validate", "--device", "openfibsem", "--state-dir", str(tmp_path), *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "instrument: openfibsem: Demo DemoMicroscope (serial 123456)" in out
    assert "(the focus found at the start: focus the instrument by hand before validating)" in out
    assert "note: the device declines autofocus: OpenFIBSEM's DemoMicroscope returns synthetic frames" in out
    assert "verdict: learned autofocus not enabled" in out
    key = InstrumentKey("openfibsem", "Demo DemoMicroscope (serial 123456)")
    verdict = find_verdict(tmp_path, key)
    assert verdict is not None
    assert not verdict.enabled
    assert verdict.learned.successes == 0
    assert verdict.learned.errors == 0
    assert choose_auto_method(key, tmp_path).method == "classical"
