"""SSEAgentClient against the testbed backend over real loopback HTTP: restart and reconnect, instructions issued
while away, acks posted while disconnected, a token expiring mid-stream, silence detection, session errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from backend_client import ClientCredentialsAuth, SessionError, SSEAgentClient
from testbed.backend import BackendServer
from testbed.backend.app import create_app

pytestmark = pytest.mark.integration

FAST = {"ping_interval": 0.5, "heartbeat_interval": 2.0}


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class Runner:
    """Runs stream_instructions in a thread and records what arrives."""

    def __init__(self, client: SSEAgentClient) -> None:
        self.client = client
        self.instructions: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.client.stream_instructions(self.instructions.append, error_callback=self.errors.append)
        except BaseException as exc:
            self.failure = exc

    def ids(self) -> list[str]:
        return [i["instruction_id"] for i in self.instructions]

    def __enter__(self) -> Runner:
        self.thread.start()
        assert wait_for(lambda: self.client.connected), self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.client.close()


@pytest.mark.parametrize("compat", ["strict", "smartem"])
def test_reconnects_after_restart_and_receives_instructions_issued_while_away(
    tmp_path: Path, compat: str
) -> None:
    server = BackendServer(tmp_path / "b.db", compat=compat, **FAST).start()  # type: ignore[arg-type]
    try:
        session = server.create_session("agent-1")
        client = SSEAgentClient(
            server.url, "agent-1", session, max_retries=None, initial_retry_delay=0.05, max_retry_delay=0.5
        )
        with Runner(client) as runner:
            first = server.create_instruction(session, "agent.status.request")
            assert wait_for(lambda: runner.ids() == [first])
            server.stop()
            assert wait_for(lambda: not client.connected)
            server.start()  # same port, same database
            away = [server.create_instruction(session, "agent.status.request") for _ in range(3)]
            assert wait_for(lambda: runner.ids()[1:] == away), (runner.ids(), runner.errors)
            assert client.connected
            assert client.stats["connections"] >= 2
        assert runner.failure is None
    finally:
        server.stop()


def test_ack_posted_while_disconnected_is_delivered_after_reconnect(tmp_path: Path) -> None:
    # SmartEM mode: an ack needs a live connection (otherwise 500), so the client must wait for the reconnect.
    server = BackendServer(tmp_path / "b.db", compat="smartem", **FAST).start()
    try:
        session = server.create_session("agent-1")
        client = SSEAgentClient(
            server.url, "agent-1", session, max_retries=None, initial_retry_delay=0.05, max_retry_delay=0.3
        )
        with Runner(client) as runner:
            iid = server.create_instruction(session, "agent.status.request")
            assert wait_for(lambda: runner.ids() == [iid])
            server.stop()
            assert wait_for(lambda: not client.connected)
            results: list[Any] = []
            acker = threading.Thread(
                target=lambda: results.append(client.acknowledge(iid, "processed", "{}"))
            )
            acker.start()
            time.sleep(0.3)
            assert acker.is_alive()  # waiting for the stream to come back
            server.start()
            acker.join(10)
            assert results, "the ack did not finish after the reconnect"
            assert results[0].outcome == "acknowledged", results
        acks = next(i for i in server.instructions(session) if i["instruction_id"] == iid)["acknowledgements"]
        assert [a["status"] for a in acks if a["outcome"] != "rejected"] == ["processed"]
    finally:
        server.stop()


def test_repeated_ack_on_strict_backend_and_wrong_agent_session_error(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "b.db", compat="strict", **FAST) as server:
        session = server.create_session("agent-1")
        client = SSEAgentClient(server.url, "agent-1", session, initial_retry_delay=0.05)
        with Runner(client) as runner:
            iid = server.create_instruction(session, "agent.status.request")
            assert wait_for(lambda: runner.ids() == [iid])
            assert client.acknowledge(iid, "processed").outcome == "acknowledged"
            assert client.acknowledge(iid, "processed").outcome in ("acknowledged", "already_acknowledged")
        intruder = SSEAgentClient(
            server.url, "someone-else", session, max_retries=None, initial_retry_delay=0.01
        )
        started = time.monotonic()
        with pytest.raises(SessionError, match="session_validation_failed"):
            intruder.stream_instructions(lambda d: None)
        assert intruder.stats["connect_attempts"] == 1
        assert time.monotonic() - started < 5


def test_silence_longer_than_read_timeout_is_a_dead_connection(tmp_path: Path) -> None:
    # No pings and no heartbeat events for a minute: with a 0.4 s read timeout the client must reconnect.
    with BackendServer(tmp_path / "b.db", ping_interval=60.0, heartbeat_interval=60.0) as server:
        session = server.create_session("agent-1")
        client = SSEAgentClient(
            server.url, "agent-1", session, read_timeout=0.4, initial_retry_delay=0.01, max_retry_delay=0.05
        )
        with Runner(client) as runner:
            assert wait_for(lambda: client.stats["connections"] >= 3, timeout=10)
            assert any("ReadTimeout" in str(e) for e in runner.errors)
            iid = server.create_instruction(session, "agent.status.request")
            assert wait_for(lambda: iid in runner.ids())


# -- a token expiring mid-stream -----------------------------------------------------------------------------------


class ExpiringTokenGate:
    """ASGI wrapper: a token endpoint issuing short-lived tokens, 401 on expired ones, and (like a gateway that
    enforces expiry) the end of any stream whose token expires while it is open."""

    def __init__(self, app: ASGIApp, lifetime: float) -> None:
        self.app = app
        self.lifetime = lifetime
        self.tokens: dict[str, float] = {}
        self.rejected = 0

    def _expiry(self, scope: Scope) -> float | None:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                return self.tokens.get(value.decode().removeprefix("Bearer "))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/token":
            token = f"token-{len(self.tokens) + 1}"
            self.tokens[token] = time.monotonic() + self.lifetime
            body = f'{{"access_token": "{token}", "expires_in": {self.lifetime}}}'.encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        expires_at = self._expiry(scope)
        if scope["path"].startswith("/agent/") and (expires_at is None or expires_at <= time.monotonic()):
            self.rejected += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"detail":"Token expired"}'})
            return
        if not scope["path"].endswith("/stream") or expires_at is None:
            await self.app(scope, receive, send)
            return
        task = asyncio.ensure_future(self.app(scope, receive, send))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), max(0.0, expires_at - time.monotonic()))
            return
        task.cancel()  # the token expired mid-stream: end the stream
        with contextlib.suppress(BaseException):
            await task
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="warning", ws="none", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_token_expiring_mid_stream_is_refreshed(tmp_path: Path) -> None:
    gate = ExpiringTokenGate(create_app(tmp_path / "b.db", **FAST), lifetime=1.5)
    with serve(gate) as url:
        session = httpx.post(f"{url}/debug/sessions/create", json={"agent_id": "agent-1", "name": "t"}).json()
        # refresh_margin 0.2 s: the cached token is used until just before it expires, so expiry happens mid-stream
        auth = ClientCredentialsAuth(f"{url}/token", "agent", "secret", refresh_margin=0.2)
        client = SSEAgentClient(
            url, "agent-1", session["session_id"], auth=auth, initial_retry_delay=0.05, max_retry_delay=0.2
        )
        with Runner(client) as runner:
            assert wait_for(lambda: len(gate.tokens) >= 3, timeout=10)  # two expiries survived
            created = httpx.post(
                f"{url}/debug/session/{session['session_id']}/create-instruction",
                json={"instruction_type": "agent.status.request", "payload": {}},
            ).json()
            assert wait_for(lambda: created["instruction_id"] in runner.ids())
            assert client.connected
            assert runner.failure is None
        assert client.stats["connections"] >= 3
