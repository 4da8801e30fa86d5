"""`em-agent check` against a real testbed backend on loopback: passing and failing preflights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli import main
from testbed.backend import BackendServer


@pytest.fixture
def backend(tmp_path: Path):  # type: ignore[no-untyped-def]
    with BackendServer(tmp_path / "backend.sqlite3", port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("EM_AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EM_AGENT_STATE_DIR", str(tmp_path / "state"))


def test_all_checks_pass(backend: BackendServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = backend.create_session("agent-1")
    watch = tmp_path / "epu"
    watch.mkdir()
    code = main(
        [
            "check",
            "--backend",
            backend.url,
            "--agent-id",
            "agent-1",
            "--session-id",
            session,
            "--watch",
            str(watch),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ OK ] backend reachable" in out
    assert "[ OK ] agent session" in out
    assert "[ OK ] state folder" in out
    assert "[SKIP] device" in out


def test_failures_are_reported_one_line_each(
    backend: BackendServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = backend.create_session("agent-1")
    code = main(
        [
            "check",
            "--backend",
            backend.url,
            "--agent-id",
            "someone-else",
            "--session-id",
            session,
            "--watch",
            str(tmp_path / "missing"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "[FAIL] agent session: session_validation_failed" in out
    assert "[FAIL] watch folder:" in out
    assert "does not exist" in out


def test_unreachable_backend_and_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["check", "--backend", "http://127.0.0.1:9"])
    out = capsys.readouterr().out
    assert code == 1
    assert "[FAIL] backend reachable: http://127.0.0.1:9" in out
    code = main(["check", "--backend", "http://example.org"])
    captured = capsys.readouterr()
    assert code == 78
    assert "plain http" in captured.err
