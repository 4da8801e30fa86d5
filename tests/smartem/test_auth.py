"""The agent's OAuth client credentials against the real backend's token check (the OIDC stand-in issues RS256
tokens the backend verifies through its JWKS): tokens refreshed across their expiry while the agent works, and a
wrong secret giving one clear error without a storm of token requests."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from testbed.epu import generate
from testbed.smartem_real import RealSmartEM
from tests.integration.test_ingest_support import REPO_ROOT, agent_command, agent_env
from tests.smartem.support import agent_oauth_env, running_daemon

pytestmark = [pytest.mark.smartem, pytest.mark.integration]


@pytest.mark.timeout(300)
def test_tokens_are_refreshed_across_their_expiry(smartem: RealSmartEM, tmp_path: Path) -> None:
    # 6 s tokens: the agent keeps each for half its life, so over ~20 s of work it fetches a handful, not one per
    # request. (The backend allows 60 s of leeway past expiry, so a test that waited for its refusal would take
    # minutes; the stand-in's count shows the refreshes instead.)
    smartem.oidc.token_lifetime_s = 6.0
    issued_before = smartem.oidc.tokens_issued
    with running_daemon(smartem, tmp_path) as daemon:
        started = time.monotonic()
        acked = 0
        while time.monotonic() - started < 20.0:
            assert daemon.run("sem.stage.get_position")["status"] == "processed"
            acked += 1
            time.sleep(0.5)
        log = daemon.log()
    issued = smartem.oidc.tokens_issued - issued_before
    assert acked >= 10
    assert 3 <= issued <= 15, (issued, acked)
    assert "auth.token" in log
    # No request was refused as unauthorized, in any form a 401 is written (error messages "-> 401", the token
    # endpoint's "HTTP 401", structured status fields). A bare "401" substring also matched instruction uuids
    # ("...-4011-...") and millisecond timestamps.
    refused = re.findall(r'-> 401\b|HTTP 401\b|"status(?:_code)?": 401\b', log)
    assert not refused, refused


@pytest.mark.timeout(120)
def test_wrong_secret_is_one_clear_error_without_a_retry_storm(smartem: RealSmartEM, tmp_path: Path) -> None:
    generate(tmp_path / "visit", preset="small", seed=1)
    env = agent_env({**agent_oauth_env(smartem), "EM_AGENT_BACKEND__CLIENT_SECRET": "not-the-secret"})
    refusals_before = smartem.oidc.refusals
    started = time.monotonic()
    proc = subprocess.run(
        agent_command(tmp_path / "visit", smartem.base_url, tmp_path / "state", "--once", "--quiet-time", "3"),
        capture_output=True, text=True, timeout=100, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, proc.stdout[-2000:]
    output = proc.stdout + proc.stderr
    assert "token endpoint refused the client credentials: HTTP 401 (unauthorized_client)" in output, output[
        -3000:
    ]
    assert "not-the-secret" not in output
    refusals = smartem.oidc.refusals - refusals_before
    assert 1 <= refusals <= 3, refusals
    assert elapsed < 60, elapsed
    assert smartem.count("acquisition") == 0
