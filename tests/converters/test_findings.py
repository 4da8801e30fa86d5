"""``em-agent validate`` lists what a partial or archived folder lacks, as ``ingest --once`` reports it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from agent.commands import parse_cmd
from converters.findings import FindingCode
from converters.validate import validate_folder
from testbed.epu import generate

SMARTEM_EXAMPLE = "DiamondLightSource__smartem-decisions/tests/testdata/epu-dir-example"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="em-agent")
    parse_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.samples
def test_smartem_test_folder_findings(epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = epu_samples_dir / SMARTEM_EXAMPLE
    report = validate_folder(folder)
    assert report.ok
    assert [f.code for f in report.findings] == [
        FindingCode.NO_METADATA,
        FindingCode.ATLAS_NOT_FOUND,
        FindingCode.PARENTS_SYNTHESIZED,
    ]
    assert "2 parent(s) would be built" in report.findings[-1].message
    assert "(foilhole 2)" in report.findings[-1].message
    # Printed even with --quiet: what the folder lacks is what a user must know before importing it.
    assert _run(["validate", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("finding: ") == 3
    assert "no Metadata/" in out


@pytest.mark.samples
def test_images_disc_only_folder_is_valid_with_findings(
    tmp_path: Path, epu_samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(epu_samples_dir / SMARTEM_EXAMPLE / "Images-Disc1", tmp_path / "Images-Disc1")
    assert _run(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no EpuSession.dm" in out
    assert "4 parent(s) would be built from file paths" in out
    assert "(acquisition 1, foilhole 2, grid 1)" in out


def test_complete_generated_session_has_no_findings(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "visit", preset="small", seed=1, previews=False)
    (acq,) = {a.acquisition_key for a in manifest.acquisitions}
    report = validate_folder(tmp_path / "visit" / acq)
    assert report.ok, report.problems
    assert report.findings == []


def test_generated_session_without_metadata_builds_the_unimaged_holes(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "visit", preset="small", seed=1, previews=False)
    (acq,) = {a.acquisition_key for a in manifest.acquisitions}
    session = tmp_path / "visit" / acq
    shutil.rmtree(session / "Metadata")
    report = validate_folder(session)
    imaged = {h.foilhole_id for h in manifest.foilholes if h.image_paths}
    with_mics = {m.foilhole_id for m in manifest.micrographs}
    built = len(with_mics - imaged)
    codes = [f.code for f in report.findings]
    assert FindingCode.NO_METADATA in codes
    if built:
        assert f"(foilhole {built})" in report.findings[-1].message
    else:
        assert FindingCode.PARENTS_SYNTHESIZED not in codes
