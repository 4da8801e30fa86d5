"""`em-agent check` against a real testbed backend on loopback: passing and failing preflights."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.commands.check_cmd import check_device
from agent.devices.simulator.config import SimulatorConfig
from agent.settings import Settings, load_settings
from testbed.backend import BackendServer
from testbed.backend.options import AuthOptions
from testbed.semphony_server import SemphonyServer
from tests.http_stub import answering


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
    assert "[FAIL] agent session: session " in out
    assert "rejected agent someone-else: session_validation_failed" in out
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


@pytest.fixture
def server_500() -> Iterator[str]:
    with answering(500, "boom") as url:
        yield url


def _semphony_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, api_key: str = "key"
) -> Settings:
    monkeypatch.setenv("EM_AGENT_DEVICE__API_KEY", api_key)
    return load_settings(None, {"state_dir": str(tmp_path), "device": {"backend": "semphony", "url": url}})


def test_device_check_fails_on_a_404_with_the_url_and_status(
    backend: BackendServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The testbed backend is a real HTTP server, but no control server: every device route answers 404.
    result = check_device(_semphony_settings(monkeypatch, tmp_path, backend.url))
    assert not result.ok, result.line()
    assert backend.url in result.detail
    assert "HTTP 404" in result.detail
    assert "/api/runs" in result.detail


def test_device_check_fails_on_a_500_with_the_url_and_status(
    server_500: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = check_device(_semphony_settings(monkeypatch, tmp_path, server_500))
    assert not result.ok, result.line()
    assert server_500 in result.detail
    assert "HTTP 500" in result.detail


def test_device_check_reads_a_control_server_and_reports_a_refused_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with SemphonyServer(config=SimulatorConfig(time_factor=0.0)) as server:
        result = check_device(_semphony_settings(monkeypatch, tmp_path, server.url, server.api_key))
        assert result.ok, result.line()
        assert result.detail.startswith(f"Semphony control server {server.url}: ")
        assert "answered GetMetrics: vacuum pumped" in result.detail
        result = check_device(_semphony_settings(monkeypatch, tmp_path, server.url, "wrong-key"))
    assert not result.ok
    assert "HTTP 401" in result.detail
    assert "API key refused" in result.detail


def test_device_check_calls_the_simulator(
    backend: BackendServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EM_AGENT_DEVICE__BACKEND", "simulator")
    code = main(["check", "--backend", backend.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ OK ] device: simulated SEM: em-agent SEM simulator answered GetMetrics: vacuum pumped" in out


@pytest.fixture
def auth_backend(tmp_path: Path) -> Iterator[BackendServer]:
    auth = AuthOptions(static_tokens=("static-1",), client_id="agent", client_secret="agent-secret")
    with BackendServer(tmp_path / "auth.sqlite3", port=0, auth=auth) as server:
        yield server


def test_oauth_credentials_reach_the_backend_and_the_stream(
    auth_backend: BackendServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = auth_backend.create_session("agent-1")
    monkeypatch.setenv("EM_AGENT_BACKEND__OAUTH_TOKEN_URL", f"{auth_backend.url}/auth/token")
    monkeypatch.setenv("EM_AGENT_BACKEND__CLIENT_ID", "agent")
    monkeypatch.setenv("EM_AGENT_BACKEND__CLIENT_SECRET", "agent-secret")
    code = main(["check", "--backend", auth_backend.url, "--agent-id", "agent-1", "--session-id", session])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ OK ] backend authentication: accepted using ClientCredentialsAuth" in out
    assert "[ OK ] agent session" in out


def test_refused_credentials_are_named(
    auth_backend: BackendServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EM_AGENT_BACKEND__TOKEN", "not-the-token")
    assert main(["check", "--backend", auth_backend.url]) == 1
    assert "[FAIL] backend authentication: rejected (401) using StaticTokenAuth" in capsys.readouterr().out
    monkeypatch.delenv("EM_AGENT_BACKEND__TOKEN")
    monkeypatch.setenv("EM_AGENT_BACKEND__OAUTH_TOKEN_URL", f"{auth_backend.url}/auth/token")
    monkeypatch.setenv("EM_AGENT_BACKEND__CLIENT_ID", "agent")
    monkeypatch.setenv("EM_AGENT_BACKEND__CLIENT_SECRET", "wrong-secret")
    assert main(["check", "--backend", auth_backend.url]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] backend authentication: token endpoint refused the client credentials: HTTP 401" in out
    assert "wrong-secret" not in out
