"""Static bearer and OAuth2 client-credentials auth: caching, early refresh, 401 handling, concurrency, no leaks."""

from __future__ import annotations

import asyncio
import logging
import threading
from urllib.parse import parse_qs

import httpx
import pytest

from backend_client import (
    AsyncSmartEMAPIClient,
    AuthenticationError,
    BackendUnavailableError,
    ClientCredentialsAuth,
    RetryPolicy,
    SmartEMAPIClient,
    StaticTokenAuth,
)

SECRET = "s3cr3t-client-secret"


class TokenServer:
    """A token endpoint handing out tok-1, tok-2, ... with a configurable lifetime."""

    def __init__(self, expires_in: float = 300.0, delay: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.issued: list[str] = []
        self.forms: list[dict[str, list[str]]] = []
        self._lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(parse_qs(request.content.decode()))
        if self.delay:
            threading.Event().wait(self.delay)  # widen the race window for the concurrency tests
        with self._lock:
            token = f"tok-{len(self.issued) + 1}-{'x' * 20}"
            self.issued.append(token)
        return httpx.Response(200, json={"access_token": token, "expires_in": self.expires_in})

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        saved, self.delay = self.delay, 0.0
        try:
            return self.handler(request)
        finally:
            self.delay = saved


def _auth(server: TokenServer, clock: list[float] | None = None) -> ClientCredentialsAuth:
    now = clock or [1000.0]
    return ClientCredentialsAuth(
        "http://kc/realms/dls/protocol/openid-connect/token",
        "SmartEM_Agent",
        SECRET,
        transport=httpx.MockTransport(server.handler),
        async_transport=httpx.MockTransport(server.async_handler),
        clock=lambda: now[0],
    )


def _api(accepted: set[str], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        seen.append(header)
        if header.removeprefix("Bearer ") in accepted:
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(401, json={"detail": "Token expired"}, headers={"WWW-Authenticate": "Bearer"})

    return httpx.MockTransport(handler)


def test_static_token_is_sent_and_hidden() -> None:
    seen: list[str] = []
    auth = StaticTokenAuth("abc123")
    with SmartEMAPIClient("http://b", auth=auth, transport=_api({"abc123"}, seen)) as client:
        client.get_status()
    assert seen == ["Bearer abc123"]
    assert "abc123" not in repr(auth)
    with pytest.raises(ValueError, match="non-empty"):
        StaticTokenAuth("")


def test_token_is_cached_and_refreshed_30s_before_expiry() -> None:
    server = TokenServer(expires_in=300)
    clock = [1000.0]
    auth = _auth(server, clock)
    assert auth.sync_token() == server.issued[0]
    assert server.forms[0] == {
        "grant_type": ["client_credentials"], "client_id": ["SmartEM_Agent"], "client_secret": [SECRET],
    }  # fmt: skip
    clock[0] += 269  # 31 s left: still valid
    assert auth.sync_token() == server.issued[0]
    clock[0] += 2  # 29 s left: inside the 30 s margin -> refresh
    assert auth.sync_token() == server.issued[1]
    assert auth.fetch_count == 2


def test_short_lived_token_is_refreshed_at_half_life_not_per_request() -> None:
    # A 20 s token (shorter than twice the 30 s margin) used to count as expired when issued: every request
    # fetched a new one. It is now kept for half its life.
    server = TokenServer(expires_in=20)
    clock = [1000.0]
    auth = _auth(server, clock)
    first = auth.sync_token()
    for _ in range(50):
        assert auth.sync_token() == first
    clock[0] += 9.9  # 10.1 s left: still valid
    assert auth.sync_token() == first
    clock[0] += 0.2  # 9.9 s left: past half-life -> refresh
    assert auth.sync_token() == server.issued[1]
    assert auth.fetch_count == 2


def test_401_refreshes_once_and_resends_once() -> None:
    server = TokenServer()
    auth = _auth(server)
    seen: list[str] = []
    accepted: set[str] = set()
    transport = _api(accepted, seen)
    with SmartEMAPIClient("http://b", auth=auth, transport=transport) as client:
        auth.sync_token()  # tok-1 cached, but the backend only accepts the next one (revoked/expired early)
        accepted.add("tok-2-" + "x" * 20)
        assert client.get_status().status == "ok"
        assert [h.split("-")[1] for h in seen] == ["1", "2"]
        accepted.clear()  # now nothing is accepted: one refresh, one resend, then AuthenticationError
        seen.clear()
        with pytest.raises(AuthenticationError) as info:
            client.get_status()
    assert len(seen) == 2
    assert info.value.status_code == 401
    assert server.issued
    assert all(token not in str(info.value) for token in server.issued)


def test_concurrent_threads_share_one_refresh() -> None:
    server = TokenServer(delay=0.2)
    auth = _auth(server)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(auth.sync_token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.issued) == 1
    assert set(tokens) == {server.issued[0]}


async def test_concurrent_tasks_share_one_refresh_and_one_401_refresh() -> None:
    server = TokenServer(delay=0.1)
    auth = _auth(server)
    seen: list[str] = []
    accepted: set[str] = set()
    async with AsyncSmartEMAPIClient("http://b", auth=auth, transport=_api(accepted, seen)) as client:
        await auth.async_token()
        accepted.add("tok-2-" + "x" * 20)  # tok-1 is refused: every request gets a 401 once
        results = await asyncio.gather(*(client.get_status() for _ in range(10)))
    assert all(r.status == "ok" for r in results)
    assert len(server.issued) == 2  # the burst of 401s caused ONE refresh


def test_token_endpoint_failures_are_clear_and_leak_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    refused = ClientCredentialsAuth(
        "http://kc/token", "agent", SECRET,
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "invalid_client"})),
    )  # fmt: skip
    client = SmartEMAPIClient("http://b", auth=refused, transport=_api(set(), []))
    with client, pytest.raises(AuthenticationError, match="invalid_client") as info:
        client.get_status()
    assert SECRET not in str(info.value)
    assert SECRET not in repr(refused)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    unreachable = ClientCredentialsAuth(
        "http://kc/token", "agent", SECRET, transport=httpx.MockTransport(down)
    )
    with (
        SmartEMAPIClient(
            "http://b", auth=unreachable, transport=_api(set(), []), retry=RetryPolicy.instant(2)
        ) as client,
        pytest.raises(BackendUnavailableError),
    ):
        client.get_status()

    garbage = ClientCredentialsAuth(
        "http://kc/token",
        "agent",
        SECRET,
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})),
    )
    with pytest.raises(AuthenticationError, match="access_token"):
        garbage.sync_token()
    assert SECRET not in caplog.text


def test_tokens_never_appear_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = TokenServer()
    auth = _auth(server)
    seen: list[str] = []
    with (
        SmartEMAPIClient(
            "http://b", auth=auth, transport=_api(set(), seen), retry=RetryPolicy.instant()
        ) as c,
        pytest.raises(AuthenticationError) as info,
    ):
        c.get_status()
    assert len(server.issued) == 2
    for token in server.issued:
        assert token not in caplog.text
        assert token not in str(info.value)
        assert token not in repr(info.value)
    assert SECRET not in caplog.text
    assert "Token fetched" in caplog.text
    assert "Token refreshed" in caplog.text


def test_keycloak_url_and_validation() -> None:
    auth = ClientCredentialsAuth.for_keycloak("http://kc:8080/", "dls", "SmartEM_Agent", SECRET)
    assert auth.token_url == "http://kc:8080/realms/dls/protocol/openid-connect/token"
    with pytest.raises(ValueError, match="secret"):
        ClientCredentialsAuth("http://kc/token", "agent", "")
