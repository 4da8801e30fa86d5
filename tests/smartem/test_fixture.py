"""The real-backend fixture itself: the backend's own token check runs against the OIDC stand-in, the SQL helper
reads only, and ``reset_data`` empties what tests write."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testbed.smartem_real import OidcStandIn, RealSmartEM, ServiceUnavailableError

from .support import running_daemon

pytestmark = [pytest.mark.smartem, pytest.mark.integration]


def test_backend_checks_tokens_from_the_stand_in(smartem: RealSmartEM) -> None:
    assert httpx.get(f"{smartem.base_url}/health", timeout=10).json()["status"] == "ok"
    bare = httpx.get(f"{smartem.base_url}/acquisitions", timeout=10)
    assert bare.status_code == 401
    assert bare.json()["detail"] == "Missing or malformed Authorization header"
    with OidcStandIn(realm=smartem.oidc.realm) as stranger:
        # Same claims, a key the backend's JWKS does not hold: refused by the signature check.
        foreign = stranger.issue_token()
    refused = httpx.get(
        f"{smartem.base_url}/acquisitions", headers={"Authorization": f"Bearer {foreign}"}, timeout=10
    )
    assert refused.status_code == 401
    wrong_azp = smartem.oidc.issue_token(azp="SomeOtherClient")
    refused = httpx.get(
        f"{smartem.base_url}/acquisitions", headers={"Authorization": f"Bearer {wrong_azp}"}, timeout=10
    )
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Token azp not permitted"
    with smartem.http() as http:
        assert http.get("/acquisitions").status_code == 200


def test_token_endpoint_grants_only_the_client(smartem: RealSmartEM) -> None:
    oidc = smartem.oidc
    ok = httpx.post(
        oidc.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": oidc.client_id,
            "client_secret": oidc.client_secret,
        },
        timeout=10,
    )
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer"
    bad = httpx.post(
        oidc.token_url,
        data={"grant_type": "client_credentials", "client_id": oidc.client_id, "client_secret": "wrong"},
        timeout=10,
    )
    assert bad.status_code == 401
    assert bad.json()["error"] == "unauthorized_client"


def test_sql_helper_is_read_only_and_reset_empties(smartem: RealSmartEM) -> None:
    with pytest.raises(ServiceUnavailableError, match="read-only"):
        smartem.sql("DELETE FROM acquisition")
    with smartem.http() as http:
        created = http.post(
            "/acquisitions", json={"uuid": "0f7e4a1c-5a8e-4a7b-9a43-8a4b5f0c1d2e", "name": "x"}
        )
        assert created.status_code == 201, created.text
    assert smartem.count("acquisition") == 1
    smartem.reset_data()
    assert smartem.count("acquisition") == 0


def test_reset_empties_while_an_agent_holds_its_instruction_stream_open(
    smartem: RealSmartEM, tmp_path: Path
) -> None:
    # CI once deadlocked here: TRUNCATE's exclusive locks against the API's open stream transaction. reset_data
    # must empty the tables with the stream open and instructions flowing.
    smartem.reset_data()
    with running_daemon(smartem, tmp_path) as daemon:
        assert daemon.run("sem.get_metrics")["status"] == "processed"
        smartem.reset_data()
        assert all(smartem.count(t) == 0 for t in ("agentinstruction", "acquisition", "agentsession"))
        assert daemon.proc.poll() is None, daemon.log()[-2000:]
