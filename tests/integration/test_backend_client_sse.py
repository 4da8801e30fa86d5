"""SSEAgentClient against the testbed backend over real loopback HTTP: restart and reconnect, instructions issued
while away, acks posted while disconnected, a token expiring mid-stream, silence detection, session errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend_client import ClientCredentialsAuth, SessionError, SSEAgentClient
from testbed.backend import AuthOptions, BackendServer

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


def test_token_expiring_mid_stream_is_refreshed(tmp_path: Path) -> None:
    # The backend issues 1.5 s tokens at /auth/token and ends an open stream when its token expires (as a gateway
    # enforcing expiry would); the client must fetch a new token and reconnect, and keep doing so.
    auth = AuthOptions(client_id="agent", client_secret="secret", token_lifetime_s=1.5)
    with BackendServer(tmp_path / "b.db", auth=auth, **FAST) as server:
        session = server.create_session("agent-1")
        # refresh_margin 0.2 s: the cached token is used until just before it expires, so expiry happens mid-stream
        token_auth = ClientCredentialsAuth(f"{server.url}/auth/token", "agent", "secret", refresh_margin=0.2)
        client = SSEAgentClient(
            server.url, "agent-1", session, auth=token_auth, initial_retry_delay=0.05, max_retry_delay=0.2
        )
        try:
            with Runner(client) as runner:

                def expiries() -> int:
                    rows = httpx.get(
                        f"{server.url}/testbed/connections", params={"session_id": session}
                    ).json()
                    return sum(1 for row in rows if row["close_reason"] == "token_expired")

                assert wait_for(lambda: expiries() >= 2, timeout=15)  # two expiries survived
                assert server.tokens is not None
                assert server.tokens.issued >= 3
                iid = server.create_instruction(session, "agent.status.request")
                assert wait_for(lambda: iid in runner.ids())
                assert client.connected
                assert runner.failure is None
            assert client.stats["connections"] >= 3
            assert token_auth.fetch_count >= 3
        finally:
            token_auth.close()
