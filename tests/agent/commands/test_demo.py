"""The demo end to end (shortened), and its field check failing on a manifest that does not match."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agent.commands.demo import DemoInstruction, _field_check, run_demo
from agent.settings import load_settings
from testbed.backend import BackendServer
from testbed.epu import GeneratorConfig, SessionGenerator

pytestmark = pytest.mark.integration


async def test_demo_runs_and_reports_ok() -> None:
    out = io.StringIO()
    code = await run_demo(seed=1, duration_s=4.0, timeout_s=90.0, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "result: OK" in text
    assert "instructions issued 7, acknowledged 7, as expected 7" in text
    assert "MISMATCH" not in text
    assert "status mismatch" not in text


async def test_demo_fails_when_an_instruction_gets_another_status_than_expected() -> None:
    # Acknowledged, but declined (no decision service in the demo): the demo must not call that a success.
    wrong = DemoInstruction(0.5, "microscope.control.skip_gridsquares", {"gridsquare_ids": [1]}, "processed")
    out = io.StringIO()
    code = await run_demo(seed=1, duration_s=4.0, timeout_s=90.0, out=out, instructions=(wrong,))
    text = out.getvalue()
    assert code == 1, text
    mismatch = next(line for line in text.splitlines() if line.startswith("status mismatch: "))
    assert mismatch.startswith("status mismatch: instruction microscope.control.skip_gridsquares ("), text
    assert mismatch.endswith("): acknowledged 'declined', expected 'processed'"), text
    assert "result: FAILED" in text
    assert "instructions issued 1, acknowledged 1, as expected 0" in text


def test_field_check_detects_a_different_session(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "b.sqlite3", port=0) as server:
        settings = load_settings(None, {"ingest": {"watch_dir": str(tmp_path)}})
        manifest = SessionGenerator(tmp_path / "epu", GeneratorConfig(preset="small", seed=7)).manifest
        problems = _field_check(server, manifest, settings)
    assert problems, "an empty backend must not match a manifest"
