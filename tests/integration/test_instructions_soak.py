"""Soak: 1,000 mixed instructions while the SSE stream is dropped 50 times and the agent (a subprocess) is
SIGKILLed and restarted 3 times. Every instruction must end acknowledged exactly once in the backend and no
device action may run twice (the simulator logs every action with its parameters, which are unique per
instruction).

Run against the testbed's strict mode and its ``smartem`` mode, where a dropped, unacknowledged instruction
comes back only after its expiry (short expiries and a fast sweep keep that quick).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.commands.instructions_cmd import API_KEY_ENV
from agent.devices.capabilities import Capability
from agent.instructions.journal import INTERRUPTED_MESSAGE
from testbed.backend import BackendServer
from testbed.semphony_server import SemphonyServer
from tests.integration.test_instructions_support import AGENT_ID, FAST_SIM

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 1000
DROPS = 50
KILLS = 3
REPO = Path(__file__).resolve().parents[2]


def start_agent(
    backend: BackendServer, semphony: SemphonyServer, session_id: str, state_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    config = {
        "ack_initial_delay_s": 0.05,
        "ack_max_delay_s": 1.0,
        "ack_max_attempts": 40,
        "drain_timeout_s": 1,
        "resync_interval_s": 1.0,
    }
    cmd = [
        sys.executable, "-m", "agent.cli", "instructions",
        "--backend", backend.url, "--agent-id", AGENT_ID, "--session-id", session_id,
        "--state-dir", str(state_dir), "--device", "semphony", "--device-url", semphony.url,
        "--config-json", json.dumps(config), "--sse-retry-delay", "0.05", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, API_KEY_ENV: semphony.api_key}
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def history(http: httpx.Client, session_id: str) -> dict[str, dict[str, Any]]:
    response = http.get("/testbed/instructions", params={"session_id": session_id})
    response.raise_for_status()
    return {r["instruction_id"]: r for r in response.json()}


def mixed(i: int) -> tuple[str, dict[str, Any]]:
    """Instruction ``i`` of the soak; device actions carry parameters unique to ``i``."""
    kind = i % 8
    if kind in (0, 4):
        return "sem.stage.move_to", {"x": round(-20 + i * 0.03, 4), "y": 1.0}
    if kind == 1:
        return "agent.status.request", {}
    if kind == 2:
        return "sem.set_view_field", {"fov_um": round(50 + i * 0.01, 4)}
    if kind == 3:
        return "sem.get_metrics", {}
    if kind == 5:
        return "microscope.control.move_stage", {
            "stage_position": {"x": round((-20 + i * 0.03) / 1000, 7), "y": 0.002}
        }
    if kind == 6:
        return "agent.info.metrics", {}
    return ("no.such.type", {}) if i % 16 == 7 else ("sem.set_view_field", {"fov_um": -1})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("compat", ["strict", "smartem"])
def test_soak(tmp_path: Path, compat: str) -> None:
    rng = random.Random(7)
    options: dict[str, Any] = {"heartbeat_interval": 1.0, "ping_interval": 0.5, "retry_ms": 50}
    expires_in = 600.0
    if compat == "smartem":
        # Redelivery only through the expiry sweep: short expiries, a fast sweep, enough resets to never
        # expire.
        options |= {"expiry_sweep_interval": 0.5, "expiry_extension": 5.0, "max_retries": 1000}
        expires_in = 8.0
    log = tmp_path / "agent.log"
    state_dir = tmp_path / "state"
    with BackendServer(tmp_path / "backend.sqlite3", compat=compat, **options) as backend:  # type: ignore[arg-type]
        semphony = SemphonyServer(config=FAST_SIM).start()
        session_id = backend.create_session(AGENT_ID)
        agent = start_agent(backend, semphony, session_id, state_dir, log)
        created: list[str] = []
        # One kept-alive client: a fresh connection per request costs ~0.1 s on this backend.
        http = httpx.Client(base_url=backend.url, timeout=30)
        kill_at = sorted(rng.sample(range(100, TOTAL - 100), KILLS))
        drop_at = set(rng.sample(range(TOTAL), DROPS))
        try:
            for i in range(TOTAL):
                itype, payload = mixed(i)
                body = {
                    "instruction_type": itype,
                    "payload": payload,
                    "priority": rng.choice(["normal", "high"]),
                    "expires_in_minutes": expires_in / 60.0,
                }
                response = http.post(f"/debug/session/{session_id}/create-instruction", json=body)
                response.raise_for_status()
                created.append(response.json()["instruction_id"])
                if i in drop_at:
                    backend.drop_streams(session_id)
                if i in kill_at:
                    agent.send_signal(signal.SIGKILL)
                    agent.wait()
                    agent = start_agent(backend, semphony, session_id, state_dir, log)
                time.sleep(0.01)
            deadline = time.monotonic() + 90
            while True:
                rows = history(http, session_id)
                pending = [iid for iid in created if rows[iid]["status"] != "acknowledged"]
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            time.sleep(1.0)  # let any late duplicate ack land before counting
            rows = history(http, session_id)
        finally:
            http.close()
            stop_started = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            try:
                # The runner (the composed daemon) exits on its own 10 s past its 30 s shutdown bound; a backstop.
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            stop_s = time.monotonic() - stop_started
            semphony.stop()

    log_text = log.read_text(errors="replace")
    tail = log_text[-3000:]
    # A clean, prompt stop (a stall would exit 1 with every thread's stack in the log).
    stall_dump = log_text[-12000:]
    assert agent.returncode == 0, (agent.returncode, stall_dump)
    assert stop_s < 15, (round(stop_s, 1), stall_dump)
    if pending:
        (tmp_path / "pending.json").write_text(json.dumps([rows[i] for i in pending], indent=1))
    assert not pending, f"{len(pending)} never acknowledged, e.g. {rows[pending[0]]}\n{tail}"
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for iid in created:
        accepted = [a for a in rows[iid]["acknowledgements"] if a["outcome"] == "accepted"]
        assert len(accepted) == 1, (iid, rows[iid]["acknowledgements"])
        assert accepted[0]["status"] != "received"
        statuses[accepted[0]["status"]] += 1
        reasons[(accepted[0]["error_message"] or "")[:40]] += 1
        if accepted[0]["status"] == "failed":
            assert INTERRUPTED_MESSAGE in (accepted[0]["error_message"] or ""), accepted[0]
    # Every invalid and unknown instruction was declined, and nearly everything else processed.
    assert statuses["declined"] >= TOTAL // 8 - KILLS
    assert set(reasons) <= {""} | {r for r in reasons if r.startswith(("unknown instruction", "invalid payload",
        "expired", INTERRUPTED_MESSAGE[:40]))}, reasons  # fmt: skip
    assert statuses["failed"] <= KILLS * (1 + 4)  # at most the in-flight ones of each kill (one per worker)
    # Under smartem's short expiries some instructions legitimately expire in the agent's queue (declined).
    floor = TOTAL * 6 // 8 - KILLS if compat == "strict" else TOTAL // 2
    assert statuses["processed"] >= floor, (statuses, reasons)

    # No device action ran twice: every action's parameters are unique to one instruction.
    log_entries = semphony.core.sem.action_log
    moves = Counter(round(a.params["x"], 4) for a in log_entries if a.capability == Capability.STAGE_MOVE_TO)
    fovs = Counter(
        round(a.params["fov_um"], 4) for a in log_entries if a.capability == Capability.SET_VIEW_FIELD
    )
    assert moves, moves.most_common(3)
    assert max(moves.values()) == 1, moves.most_common(3)
    assert fovs, fovs.most_common(3)
    assert max(fovs.values()) == 1, fovs.most_common(3)
    # Each processed move ran exactly once; an interrupted one may or may not have reached the stage.
    move_types = ("sem.stage.move_to", "microscope.control.move_stage")
    final = {
        iid: next(a for a in rows[iid]["acknowledgements"] if a["outcome"] == "accepted") for iid in created
    }
    processed_moves = sum(
        1
        for iid in created
        if rows[iid]["instruction_type"] in move_types and final[iid]["status"] == "processed"
    )
    interrupted_moves = sum(
        1
        for iid in created
        if rows[iid]["instruction_type"] in move_types and final[iid]["status"] == "failed"
    )
    assert processed_moves <= sum(moves.values()) <= processed_moves + interrupted_moves
