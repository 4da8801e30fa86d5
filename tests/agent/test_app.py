"""The composition root: every entry point builds through :mod:`agent.app`, and ``check`` probes the instruction
stream with the daemon's stream client (``backend_client``), not a client of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import app
from agent.cli import main
from agent.commands import check_cmd, run_cmd
from agent.service.windows import StopBridge, run_service_main
from agent.settings import ConfigError, Settings, load_settings
from backend_client.sse import SSEAgentClient
from testbed.backend import BackendServer
from tests.http_stub import answering


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EM_AGENT_"):
            monkeypatch.delenv(key)


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, dict[str, Any]]]:
    """Every call of :func:`agent.app.compose`; each is refused as a configuration error, so that an entry
    point returns 78 at once instead of running a daemon."""
    calls: list[tuple[Settings, dict[str, Any]]] = []

    def refuse(settings: Settings, **options: Any) -> app.Composition:
        calls.append((settings, options))
        raise ConfigError("stopped at the composition root")

    monkeypatch.setattr(app, "compose", refuse)
    # The process entry points install JSON logging on the root logger; not in this process's tests.
    monkeypatch.setattr(app, "configure_logging", lambda config: [])
    monkeypatch.setattr(run_cmd, "configure_logging", lambda config: [])
    return calls


def test_em_agent_run_composes_through_the_root(
    composed: list[tuple[Settings, dict[str, Any]]], tmp_path: Path
) -> None:
    argv = ["run", "--backend", "http://127.0.0.1:9", "--agent-id", "a1", "--session-id", "s1"]
    code = main([*argv, "--state-dir", str(tmp_path), "--device", "simulator"])
    assert code == 78
    [(settings, _)] = composed
    assert (settings.agent_id, settings.session_id, settings.device.backend) == ("a1", "s1", "simulator")
    assert settings.state_dir == tmp_path


def test_the_windows_service_composes_through_the_root(
    composed: list[tuple[Settings, dict[str, Any]]], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'agent_id = "svc"\nstate_dir = "{tmp_path.as_posix()}"\n[ingest]\nwatch_dir = "epu"\n')
    assert run_service_main(config, StopBridge()) == 78
    [(settings, _)] = composed
    assert settings.agent_id == "svc"
    assert settings.ingest is not None


def test_the_instruction_runner_composes_through_the_root(
    composed: list[tuple[Settings, dict[str, Any]]], tmp_path: Path
) -> None:
    argv = ["--backend", "http://127.0.0.1:9", "--agent-id", "a2", "--session-id", "s2"]
    argv += [
        "--state-dir",
        str(tmp_path),
        "--config-json",
        '{"drain_timeout_s": 2}',
        "--sse-retry-delay",
        "0.05",
    ]
    assert main(["instructions", *argv, "--heartbeat-interval", "0"]) == 78
    [(settings, options)] = composed
    assert settings.ingest is None  # instructions only
    assert (settings.agent_id, settings.session_id) == ("a2", "s2")
    assert settings.instructions.drain_timeout_s == 2
    assert settings.backend.heartbeat_interval_s == 0
    assert options["stream_retry_delay_s"] == 0.05


def test_the_runner_reports_a_bad_config_json_as_a_configuration_error(
    composed: list[tuple[Settings, dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--backend",
        "http://127.0.0.1:9",
        "--agent-id",
        "a",
        "--session-id",
        "s",
        "--state-dir",
        str(tmp_path),
    ]
    assert main(["instructions", *argv, "--config-json", "{not json"]) == 78
    assert "configuration error" in capsys.readouterr().err
    assert composed == []


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackendServer]:
    with BackendServer(tmp_path / "backend.sqlite3", port=0) as server:
        yield server


def _settings(url: str, session: str, tmp_path: Path, agent_id: str = "agent-1") -> Settings:
    return load_settings(
        None,
        {"backend": {"url": url}, "agent_id": agent_id, "session_id": session, "state_dir": str(tmp_path)},
    )


def test_check_probes_the_stream_with_the_daemons_stream_client(
    backend: BackendServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[SSEAgentClient] = []
    original = app.instruction_stream

    def recording(*args: Any, **kwargs: Any) -> SSEAgentClient:
        stream = original(*args, **kwargs)
        built.append(stream)
        return stream

    monkeypatch.setattr(app, "instruction_stream", recording)
    session = backend.create_session("agent-1")
    result = check_cmd.check_session(_settings(backend.url, session, tmp_path))
    assert result.ok, result.line()
    assert result.detail == f"{session} accepts agent agent-1"
    [stream] = built
    assert stream.max_retries == 0  # a preflight reports the first failure
    assert not stream.running  # closed again


def test_check_names_another_agents_session(backend: BackendServer, tmp_path: Path) -> None:
    session = backend.create_session("agent-1")
    result = check_cmd.check_session(_settings(backend.url, session, tmp_path, agent_id="someone-else"))
    assert not result.ok
    assert "session_validation_failed" in result.detail


@pytest.fixture
def server_404() -> Iterator[str]:
    with answering(404, "Not Found") as url:
        yield url


def test_check_fails_on_a_stream_that_answers_404_with_the_url_and_status(
    server_404: str, tmp_path: Path
) -> None:
    result = check_cmd.check_session(_settings(server_404, "s-404", tmp_path))
    assert not result.ok
    assert f"GET {server_404}/agent/agent-1/session/s-404/instructions/stream answered 404" in result.detail
    assert result.line().startswith("[FAIL] agent session: ")


def test_check_reports_an_unreachable_stream(tmp_path: Path) -> None:
    result = check_cmd.check_session(_settings("http://127.0.0.1:9", "s", tmp_path))
    assert not result.ok
    assert result.detail.startswith("http://127.0.0.1:9: ")
    assert "ConnectError" in result.detail
