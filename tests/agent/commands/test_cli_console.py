"""The console script on a non-UTF-8 code page: no crash, no buffering."""

from __future__ import annotations

import os
import subprocess
import sys


def test_help_and_non_ascii_output_on_a_cp1252_console() -> None:
    env = dict(os.environ, PYTHONIOENCODING="cp1252", PYTHONUTF8="0")
    code = "import sys; from agent.cli import main, _safe_console; _safe_console(); print('grid ✓ Å µm'); sys.exit(main(['--help']))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode("cp1252", "replace")
    out = proc.stdout.decode("cp1252")
    assert "grid \\u2713 Å µm" in out
    assert "usage: em-agent" in out
