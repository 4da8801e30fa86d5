"""Fault injection over HTTP and through the Python API.

These tests do not use the module-shared servers of conftest: each gets a server of its own, so that fault
state can never leak between tests whatever the reset does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from testbed.backend import BackendServer

from .conftest import FAST, SseReader

Opener = Callable[..., SseReader]


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[BackendServer]:
    """A strict-mode backend of this test's own."""
    with BackendServer(tmp_path / "strict.sqlite3", compat="strict", **FAST) as server:
        yield server


@pytest.fixture(params=["strict", "smartem"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendServer]:
    """A backend of this test's own, in each mode."""
    with BackendServer(tmp_path / f"{request.param}.sqlite3", compat=request.param, **FAST) as server:
        yield server


def test_fail_next_with_retry_after(strict_server: BackendServer, client: httpx.Client) -> None:
    strict_server.fail_next(2, status=503, retry_after=1.5)
    first = client.get("/status")
    assert first.status_code == 503
    assert first.headers["retry-after"] == "2"  # whole seconds, rounded up
    assert client.get("/testbed/faults").json()["fail_remaining"] == 1  # /testbed/ is never affected
    assert client.post("/acquisitions", json={"uuid": "a", "name": "n"}).status_code == 503
    assert client.get("/testbed/counts").json()["acquisition"] == 0  # the failed request did nothing
    assert client.get("/status").status_code == 200
    assert client.get("/testbed/faults").json()["injected_failures"] == 2


def test_fail_over_http_with_429_and_path_prefix(strict_server: BackendServer, client: httpx.Client) -> None:
    response = client.post(
        "/testbed/faults/fail",
        json={"count": 1, "status": 429, "retry_after": 0, "path_prefix": "/acquisitions"},
    )
    assert response.json()["fail_remaining"] == 1
    assert client.get("/status").status_code == 200  # other paths pass
    limited = client.post("/acquisitions", json={"uuid": "a", "name": "n"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0"
    assert client.post("/acquisitions", json={"uuid": "a", "name": "n"}).status_code == 201
    client.post("/testbed/faults/fail", json={"count": 5, "retry_after": None})
    assert "retry-after" not in client.get("/status").headers
    assert client.delete("/testbed/faults").json()["fail_remaining"] == 0
    assert client.get("/status").status_code == 200
    assert client.post("/testbed/faults/fail", json={"count": 1, "status": 404}).status_code == 422


def test_latency(strict_server: BackendServer, client: httpx.Client) -> None:
    client.post("/testbed/faults/latency", json={"seconds": 0.3})
    started = time.perf_counter()
    assert client.get("/status").status_code == 200
    assert time.perf_counter() - started >= 0.3
    strict_server.add_latency(0)
    started = time.perf_counter()
    client.get("/status")
    assert time.perf_counter() - started < 0.3


def test_drop_streams(any_server: BackendServer, client: httpx.Client, open_stream: Opener) -> None:
    sid = any_server.create_session("agent-1")
    first = open_stream(any_server, "agent-1", sid)
    first.next_event("connection")
    assert any_server.drop_streams() == 1
    first.wait_closed()
    second = open_stream(any_server, "agent-1", sid)
    second.next_event("connection")
    assert client.post("/testbed/faults/drop-streams").json() == {"dropped": 1}
    second.wait_closed()
    if any_server.options.compat == "strict":
        reasons = {
            c["close_reason"] for c in client.get("/testbed/connections", params={"session_id": sid}).json()
        }
        assert reasons == {"dropped_by_fault"}
