"""The operator CLI: ``testbed backend``, ``testbed instruct`` and ``testbed instructions``."""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testbed.backend import BackendServer
from testbed.cli_backend import register, watch_instructions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="em-agent testbed")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_register_adds_the_three_commands() -> None:
    parser = _parser()
    args = parser.parse_args(
        ["backend", "--port", "9001", "--compat", "smartem", "--heartbeat-interval", "5"]
    )
    assert (args.port, args.compat, args.heartbeat_interval) == (9001, "smartem", 5.0)
    args = parser.parse_args(["instruct", "agent.status.request", "--payload", "{}", "--priority", "high"])
    assert (args.type, args.priority, args.expires_in) == ("agent.status.request", "high", 3600.0)
    args = parser.parse_args(["instructions", "--watch", "--session-id", "s"])
    assert args.watch
    assert callable(args.func)


def test_instruct_and_list(strict_server: BackendServer, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    url = strict_server.url
    args = parser.parse_args(["instruct", "x.y", "--payload", '{"a": 1}', "--backend", url])
    assert args.func(args) == 1  # no active session yet
    assert "no active agent session" in capsys.readouterr().err
    sid = strict_server.create_session("agent-1")
    args = parser.parse_args(
        [
            "instruct",
            "x.y",
            "--payload",
            '{"a": 1}',
            "--backend",
            url,
            "--priority",
            "critical",
            "--expires-in",
            "30",
        ]
    )
    assert args.func(args) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["session_id"] == sid
    item = strict_server.instructions(sid)[0]
    assert (item["instruction_id"], item["payload"], item["priority"]) == (
        created["instruction_id"],
        {"a": 1},
        "critical",
    )
    strict_server.create_session("agent-2")
    args = parser.parse_args(["instruct", "x.y", "--backend", url])
    assert args.func(args) == 1
    assert "several active sessions" in capsys.readouterr().err
    args = parser.parse_args(["instruct", "x.y", "--payload", "{bad", "--backend", url, "--session-id", sid])
    assert args.func(args) == 2
    args = parser.parse_args(["instructions", "--backend", url, "--session-id", sid])
    assert args.func(args) == 0
    line = capsys.readouterr().out
    assert created["instruction_id"] in line
    assert "pending" in line


def test_watch_prints_changes(strict_server: BackendServer) -> None:
    sid = strict_server.create_session("agent-1")
    iid = strict_server.create_instruction(sid, "x.y")
    out = io.StringIO()
    with httpx.Client(base_url=strict_server.url, verify=False) as client:
        watch_instructions(client, session_id=sid, interval=0.01, out=out, iterations=2)
        assert out.getvalue().count(iid) == 1  # unchanged on the second poll: printed once
        with client.stream("GET", f"/agent/agent-1/session/{sid}/instructions/stream") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: instruction"):
                    break
        watch_instructions(client, session_id=sid, interval=0.01, out=out, iterations=1, as_json=True)
    assert json.loads(out.getvalue().splitlines()[-1])["status"] == "sent"


def test_cli_errors_when_backend_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = _parser().parse_args(["instructions", "--backend", f"http://127.0.0.1:{port}"])
    assert args.func(args) == 1
    assert "cannot reach the backend" in capsys.readouterr().err


def test_python_m_runs_the_backend(tmp_path: Path) -> None:
    """The real entry point, with a static token (so the CLI's auth options reach the server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "cli.sqlite3"
    command = [
        sys.executable,
        "-m",
        "testbed.backend",
        "--port",
        str(port),
        "--db",
        str(db),
        "--compat",
        "smartem",
        "--token",
        "cli-token",
    ]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=1.0).json()
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                    assert time.monotonic() < deadline, "backend did not start"
                    time.sleep(0.1)
            assert status["configuration"]["compat"] == "smartem"
            assert status["configuration"]["auth"] == "bearer"
            assert db.exists()
            url = f"http://127.0.0.1:{port}/acquisitions"
            assert httpx.get(url, timeout=5.0, verify=False).status_code == 401
            authorised = httpx.get(
                url, timeout=5.0, verify=False, headers={"Authorization": "Bearer cli-token"}
            )
            assert authorised.json() == []
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode in (0, -15)
