"""A visit (two grids) written in accelerated time while the agent daemon watches it, into the real SmartEM backend, with three
``kill -9`` of the agent and an outage of the backend's API in the middle: nothing lost, nothing duplicated."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testbed.epu import Manifest, generate
from testbed.smartem_real import RealSmartEM
from tests.integration.test_ingest_support import agent_command, agent_env, run_agent_once
from tests.smartem.support import agent_oauth_env, manifest_problems, row_counts

pytestmark = [pytest.mark.smartem, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_kills_and_an_api_restart_during_a_live_session(smartem: RealSmartEM, tmp_path: Path) -> None:
    rng = random.Random(12)
    out = tmp_path / "visit"
    out.mkdir()
    state = tmp_path / "state"
    env = agent_env(agent_oauth_env(smartem))
    result: dict[str, Manifest] = {}
    writer = threading.Thread(
        target=lambda: result.setdefault(
            "m",
            generate(out, preset="small", seed=4, grids=2, timing="accelerated", duration_s=25, disorder=0.2),
        )
    )
    writer.start()
    try:
        for round_no in range(4):
            proc = subprocess.Popen(
                agent_command(out, smartem.base_url, state),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(rng.uniform(3.0, 5.0))
                if round_no == 1:
                    # The API goes away for 8 s under a running agent, then comes back (same database).
                    smartem.stop_api()
                    time.sleep(8.0)
                    smartem.start_api()
                    time.sleep(rng.uniform(2.0, 4.0))
                if round_no == 3:
                    break  # the last agent is not killed: it stops below, after the writer finished
            finally:
                if round_no < 3:
                    proc.kill()  # SIGKILL: no cleanup, no flush
                    proc.wait()
        writer.join()
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        writer.join()
    mid_counts = row_counts(smartem)
    assert mid_counts["micrograph"] > 0, "the live agents got nothing in"
    # A final pass over the finished folder with the same state folder completes whatever was in flight.
    run_agent_once(out, smartem.base_url, state, timeout=300, env=agent_oauth_env(smartem))
    assert manifest_problems(smartem, result["m"]) == []
