"""``em-agent parse`` and ``em-agent validate`` (agent/commands/parse_cmd.py) through argparse."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from agent.commands import parse_cmd

SESSION391 = "DiamondLightSource__smartem-decisions/tests/testdata/epu-dir-example"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="em-agent")
    parse_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.samples
def test_parse_folder_json(epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["parse", str(epu_samples_dir / SESSION391), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = sorted(line["kind"] for line in lines)
    assert kinds.count("micrograph") == 4
    assert kinds.count("foilhole_image") == 4
    session = next(line for line in lines if line["kind"] == "session")
    assert session["acquisition"]["epu_version"] == "3.9.1.8206"


@pytest.mark.samples
def test_parse_one_file_human(epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = epu_samples_dir / SESSION391 / "Images-Disc1/GridSquare_8999138/Data"
    name = "FoilHole_9015883_Data_9017347_6_20250108_154915.xml"
    assert _run(["parse", str(path / name)]) == 0
    out = capsys.readouterr().out
    assert "micrograph FoilHole_9015883_Data_9017347_6_20250108_154915" in out
    assert "dose 14.41 e/A^2" in out


def test_parse_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["parse", str(tmp_path / "missing")]) == 2
    bad = tmp_path / "EpuSession.dm"
    bad.write_bytes(b"<EpuSessionXml><Id>")
    assert _run(["parse", str(bad), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)
    assert error["error"] == "IncompleteFileError"
    assert _run(["parse", str(tmp_path), "--path-map", "nonsense"]) == 2


@pytest.mark.samples
def test_validate_ok(epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["validate", str(epu_samples_dir / SESSION391)]) == 0
    assert "OK " in capsys.readouterr().out


@pytest.mark.samples
def test_validate_broken_folder(
    epu_samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = tmp_path / "Supervisor_broken"
    shutil.copytree(epu_samples_dir / SESSION391, session)
    data = session / "Images-Disc1/GridSquare_8999138/Data"
    micrograph = data / "FoilHole_9015883_Data_9017347_6_20250108_154915.xml"
    micrograph.write_bytes(micrograph.read_bytes()[:5000])  # half-written
    (data / "FoilHole_9015883_Data_9017354_6_20250108_154918.xml").write_bytes(b"<MicroscopeImage/>x")
    stray = session / "Images-Disc1/GridSquare_1/FoilHoles"
    stray.mkdir(parents=True)
    shutil.copy(
        session / "Images-Disc1/GridSquare_8999138/FoilHoles/FoilHole_9015889_20250108_154715.xml", stray
    )
    assert _run(["validate", str(session), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out
    problems = [line for line in out.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3
    assert any("incomplete" in p and "154915" in p for p in problems)
    assert any("MalformedFileError" in p and "154918" in p for p in problems)
    assert any("grid square 1 is not listed" in p for p in problems)


def test_validate_not_an_epu_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["validate", str(tmp_path)]) == 1
    assert "neither EpuSession.dm" in capsys.readouterr().out
