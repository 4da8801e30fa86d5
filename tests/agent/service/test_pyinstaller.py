"""The PyInstaller spec of deploy/windows builds on Linux too, and the bundle runs `em-agent --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import import_optional

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_file_build_runs_help(tmp_path: Path) -> None:
    import_optional("PyInstaller", "EM_AGENT_REQUIRE_PYINSTALLER", module_level=False)
    env = dict(os.environ, PYINSTALLER_CONFIG_DIR=str(tmp_path / "cfg"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--clean",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(tmp_path / "dist"),
            "--workpath",
            str(tmp_path / "work"),
            str(REPO / "deploy" / "windows" / "em-agent.spec"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    exe = tmp_path / "dist" / "em-agent"
    run = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "usage: em-agent" in run.stdout
    for command in ("run", "ingest", "config", "check", "service"):
        assert command in run.stdout
