"""The daemon as a real process: sd_notify, graceful and forced shutdown, log shipping to a failing backend."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.backend import BackendServer
from testbed.epu import GeneratorConfig, SessionGenerator

pytestmark = pytest.mark.integration

AGENT = "lifecycle-agent"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
    env.update(
        EM_AGENT_STATE_DIR=str(tmp_path / "state"),
        EM_AGENT_LOGGING__STATUS_INTERVAL_S="0.5",
        EM_AGENT_BACKEND__HEARTBEAT_INTERVAL_S="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _start(tmp_path: Path, url: str, watch: Path, session: str | None, **extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        "--backend",
        url,
        "--watch",
        str(watch),
        "--agent-id",
        AGENT,
    ]
    if session:
        cmd += ["--session-id", session]
    log_path = tmp_path / f"agent-{time.monotonic_ns()}.log"
    with log_path.open("w") as log_file:  # a file, not a pipe: a full pipe would block the agent's logging
        proc = subprocess.Popen(cmd, env=_env(tmp_path, **extra), stderr=log_file, stdout=subprocess.DEVNULL)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _log(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait for the ``agent.ready`` line (signal handlers are installed by then)."""
    _wait_for(lambda: '"agent.ready"' in _log(proc) or proc.poll() is not None, timeout)
    assert proc.poll() is None, _log(proc)[-3000:]


def _events(stderr: str) -> list[dict[str, object]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    watch = tmp_path / "epu"
    watch.mkdir()
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        proc = _start(
            tmp_path, backend.url, watch, None, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000"
        )
        try:
            seen: list[str] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                any(m.startswith("READY=1") for m in seen)
                and "WATCHDOG=1" in seen
                and any(m.startswith("STATUS=running") and "outbox=" in m for m in seen)
            ):
                seen.append(sock.recv(4096).decode())
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in seen:
                seen.append(sock.recv(4096).decode())
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sock.close()
    assert any(m.startswith("READY=1") for m in seen)
    assert "WATCHDOG=1" in seen


def test_sigterm_during_burst_drains_within_bound_and_second_run_completes(tmp_path: Path) -> None:
    watch = tmp_path / "epu"
    watch.mkdir()
    gen = SessionGenerator(watch, GeneratorConfig(preset="small", seed=3))
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        session = backend.create_session(AGENT)
        proc = _start(tmp_path, backend.url, watch, session, EM_AGENT_INSTRUCTIONS__DRAIN_TIMEOUT_S="2")
        try:
            _wait_ready(proc)
            gen.run()  # a burst: the whole session at full speed
            proc.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = proc.wait(45)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = _log(proc)
        assert code == 0, stderr[-3000:]
        assert elapsed < 30, f"shutdown took {elapsed:.1f} s"
        events = [e["event"] for e in _events(stderr)]
        assert "agent.stopping" in events
        assert "agent.stopped" in events
        # Whatever was not posted before the stop is in the durable outbox: a second run finishes the job.
        proc = _start(tmp_path, backend.url, watch, session)
        try:
            _wait_ready(proc)
            expected = gen.manifest.expected_counts(include_near_grid_bar=False).as_dict()
            _wait_for(lambda: backend.counts() == {**backend.counts(), **expected}, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    watch = tmp_path / "epu"
    watch.mkdir()
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        backend.add_latency(5.0)  # every backend call is slow: a graceful stop would wait for them
        proc = _start(tmp_path, backend.url, watch, None)
        try:
            _wait_ready(proc)
            SessionGenerator(watch, GeneratorConfig(preset="small", seed=4)).run()
            time.sleep(2.0)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = proc.wait(10)
            assert time.monotonic() - start < 5
            assert code == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            backend.clear_faults()


def test_log_shipping_to_failing_backend_never_blocks_ingest(tmp_path: Path) -> None:
    watch = tmp_path / "epu"
    watch.mkdir()
    gen = SessionGenerator(watch, GeneratorConfig(preset="small", seed=5))
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        session = backend.create_session(AGENT)
        backend.fail_next(1_000_000, status=503, path_prefix=f"/agent/{AGENT}/session/{session}/logs")
        proc = _start(
            tmp_path,
            backend.url,
            watch,
            session,
            EM_AGENT_LOGGING__SHIP="true",
            EM_AGENT_LOGGING__SHIP_INTERVAL_S="0.2",
            EM_AGENT_LOGGING__SHIP_BUFFER="50",
        )
        try:
            _wait_ready(proc)
            gen.run()
            expected = gen.manifest.expected_counts(include_near_grid_bar=False).as_dict()
            _wait_for(lambda: backend.counts() == {**backend.counts(), **expected}, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        assert code == 0


def test_unreachable_backend_keeps_ingesting_to_disk_and_exits_cleanly(tmp_path: Path) -> None:
    watch = tmp_path / "epu"
    watch.mkdir()
    SessionGenerator(watch, GeneratorConfig(preset="small", seed=6)).run()
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = _start(tmp_path, dead, watch, "some-session", EM_AGENT_LOGGING__SHIP="true")
    db = tmp_path / "state" / "em-agent.sqlite3"

    def outbox_filled() -> bool:
        if not db.exists():
            return False
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            table = next((t for t in tables if "outbox" in t), None)
            return table is not None and conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 100

    try:
        _wait_ready(proc)
        _wait_for(outbox_filled, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    assert code == 0
