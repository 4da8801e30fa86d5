"""``em-agent instructions`` as a process: the daemon composed by :mod:`agent.app`, instructions only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.backend import BackendServer
from tests.integration.test_instructions_support import AGENT_ID, FAST_BACKEND, ack_of, result_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_runner_executes_instructions_and_stops_cleanly(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "backend.sqlite3", **FAST_BACKEND) as backend:  # type: ignore[arg-type]
        session_id = backend.create_session(AGENT_ID)
        cmd = [
            sys.executable, "-m", "agent.cli", "instructions", "--backend", backend.url, "--agent-id", AGENT_ID,
            "--session-id", session_id, "--state-dir", str(tmp_path / "state"), "--sse-retry-delay", "0.05",
            "--heartbeat-interval", "0",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
        log_path = tmp_path / "runner.log"
        with log_path.open("wb") as log_file:  # a file, not a pipe: a full pipe would block the runner
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            iid = backend.create_instruction(session_id, "agent.config.update", {"heartbeat_interval_s": 5})
            deadline = time.monotonic() + 30
            while (
                row := next(r for r in backend.instructions(session_id) if r["instruction_id"] == iid)
            ) and (ack_of(row) is None):
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.05)
            # The runner is the composed daemon: the heartbeat period takes effect (it is no longer fixed).
            assert ack_of(row)["status"] == "processed", ack_of(row)  # type: ignore[index]
            assert result_of(row)["changed"] == {"heartbeat_interval_s": 5.0}
        finally:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        log = log_path.read_text()
        assert code == 0, log[-3000:]
        assert time.monotonic() - started < 15
        assert "instructions.runner_started" in log
