"""Configuration precedence (defaults < TOML < environment < flags), secrets handling and safety checks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agent.commands.common import nested_overrides
from agent.settings import ConfigError, load_settings, masked_dump, platform_log_file, platform_state_dir

SECRET = "super-secret-token-value-123"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("EM_AGENT_"):
            monkeypatch.delenv(key)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(
        tmp_path,
        'agent_id = "from-file"\nsession_id = "file-session"\n[backend]\nurl = "http://127.0.0.1:9000"\n'
        "read_timeout_s = 11.0\n",
    )
    assert load_settings(None).agent_id == "em-agent"
    assert load_settings(cfg).agent_id == "from-file"
    monkeypatch.setenv("EM_AGENT_AGENT_ID", "from-env")
    monkeypatch.setenv("EM_AGENT_BACKEND__READ_TIMEOUT_S", "12.5")
    s = load_settings(cfg)
    assert (s.agent_id, s.session_id, s.backend.read_timeout_s) == ("from-env", "file-session", 12.5)
    assert s.backend.url == "http://127.0.0.1:9000"
    s = load_settings(cfg, nested_overrides({"agent_id": "from-flag", "backend.url": None}))
    assert s.agent_id == "from-flag"
    assert s.backend.url == "http://127.0.0.1:9000"


def test_secret_from_env_is_masked_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_AGENT_BACKEND__TOKEN", SECRET)
    s = load_settings(None)
    assert s.backend.resolved_token() == SECRET
    dumped = json.dumps(masked_dump(s))
    assert SECRET not in dumped
    assert masked_dump(s)["backend"]["token"] == "***"
    assert SECRET not in repr(s)


def test_secret_on_command_line_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"backend\.token is a secret"):
        load_settings(None, {"backend": {"token": SECRET}})


def test_secret_file_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o644)
    s = load_settings(None, {"backend": {"token_file": str(secret_file)}})
    with caplog.at_level(logging.WARNING):
        assert s.backend.resolved_token() == SECRET
    assert "readable by other users" in caplog.text
    secret_file.chmod(0o600)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        s.backend.resolved_token()
    assert "readable by other users" not in caplog.text


def test_plain_http_refused_for_remote_backend() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        load_settings(None, {"backend": {"url": "http://smartem.example.org"}})
    ok = load_settings(None, {"backend": {"url": "http://smartem.example.org", "allow_insecure_http": True}})
    assert ok.backend.allow_insecure_http
    assert load_settings(None, {"backend": {"url": "https://smartem.example.org"}}).backend.verify_tls


def test_unknown_key_and_bad_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agnet_id"):
        load_settings(_toml(tmp_path, 'agnet_id = "typo"\n'))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_platform_defaults() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/em-agent", "LOGS_DIRECTORY": "/var/log/em-agent"}
    assert platform_state_dir(env) == Path("/var/lib/em-agent")
    assert platform_log_file(env) == Path("/var/log/em-agent/em-agent.jsonl")
    assert platform_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/em-agent")
    assert platform_log_file({}) is None


def test_example_config_parses_and_is_complete() -> None:
    from agent.config_example import render_example

    example = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"
    assert example.read_text(encoding="utf-8") == render_example(), (
        "deploy/config.example.toml is stale: regenerate it with `em-agent config example > deploy/config.example.toml`"
    )
    s = load_settings(example)
    assert s.ingest is not None
