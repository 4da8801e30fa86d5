"""``em-agent ingest --dry-run``: parses a generated visit and reports, with no backend."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.commands import ingest_cmd
from testbed.epu import generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    ingest_cmd.register(parser.add_subparsers(dest="command"))
    return parser


def test_dry_run_reports_every_entity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = generate(tmp_path / "visit", preset="small", seed=1, previews=False)
    args = _parser().parse_args(
        [
            "ingest",
            str(tmp_path / "visit"),
            "--dry-run",
            "--json",
            "--parse-processes",
            "0",
            "--quiet-time",
            "1",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = manifest.expected_counts().as_dict()
    entities = report["datastore"]["entities"]
    for kind in ("acquisition", "grid", "atlas", "gridsquare", "foilhole", "micrograph"):
        assert entities[kind]["known"] == expected[kind], kind
    near = sum(h.is_near_grid_bar for h in manifest.foilholes)
    assert entities["foilhole"]["skipped"] == near
    assert report["files_failed"] == 0


def test_missing_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["ingest", str(tmp_path / "absent"), "--once"])
    assert args.func(args) == 2
    assert "is not a folder" in capsys.readouterr().err
