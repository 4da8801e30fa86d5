"""Fixtures for the backend contract tests: real servers on 127.0.0.1 and a raw SSE reader.

Intervals are shortened (heartbeat 0.3 s, ping 0.2 s) so heartbeat and ping behaviour is observable in well
under a second; the housekeeping sweep is driven explicitly through ``POST /testbed/sweep`` (its automatic
period is long) so expiry tests are deterministic.

Starting and stopping uvicorn costs about 0.3 s, so each test module shares one server per mode and every test
begins with :meth:`BackendServer.reset` (open streams ended, faults cleared, every row deleted, id counters
restarted): the state a test sees is exactly that of a new server. Tests that restart a server, inject
faults or need other options start their own. Test clients pass ``verify=False``: it is plain HTTP on
loopback, and loading the CA bundle would cost tens of milliseconds per client.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from testbed.backend import BackendServer, Compat

FAST: dict[str, Any] = {
    "heartbeat_interval": 0.3,
    "ping_interval": 0.2,
    "expiry_sweep_interval": 600.0,
    "retry_ms": 250,
}


def _shared(factory: pytest.TempPathFactory, compat: Compat) -> Iterator[BackendServer]:
    with BackendServer(factory.mktemp(compat) / f"{compat}.sqlite3", compat=compat, **FAST) as server:
        yield server


@pytest.fixture(scope="module")
def shared_strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The module's strict-mode backend (use :func:`strict_server`, which resets it)."""
    yield from _shared(tmp_path_factory, "strict")


@pytest.fixture(scope="module")
def shared_smartem_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The module's smartem-compat backend (use :func:`smartem_server`, which resets it)."""
    yield from _shared(tmp_path_factory, "smartem")


def _fresh(server: BackendServer) -> BackendServer:
    server.reset()
    counts = server.counts()
    assert counts == dict.fromkeys(counts, 0)  # the reset really emptied it
    return server


@pytest.fixture
def strict_server(shared_strict_server: BackendServer) -> BackendServer:
    """A strict-mode backend with fast intervals, empty at the start of the test."""
    return _fresh(shared_strict_server)


@pytest.fixture
def smartem_server(shared_smartem_server: BackendServer) -> BackendServer:
    """A smartem-compat backend with fast intervals, empty at the start of the test."""
    return _fresh(shared_smartem_server)


@pytest.fixture(params=["strict", "smartem"])
def any_server(request: pytest.FixtureRequest) -> BackendServer:
    """The same test in both modes (each mode's shared server, emptied)."""
    server: BackendServer = request.getfixturevalue(f"shared_{request.param}_server")
    return _fresh(server)


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """An httpx client bound to whichever server fixture the test uses."""
    for name in ("strict_server", "smartem_server", "any_server"):
        if name in request.fixturenames:
            server: BackendServer = request.getfixturevalue(name)
            break
    else:
        raise RuntimeError("client fixture needs a server fixture")
    with httpx.Client(base_url=server.url, timeout=10.0, verify=False) as c:
        yield c


@dataclass
class Message:
    """One SSE message block as it came over the wire (``comment`` set for ``:`` lines)."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None
    received_at: float = field(default_factory=time.perf_counter)

    def json(self) -> Any:
        """The decoded ``data``."""
        assert self.data is not None
        return json.loads(self.data)


class SseReader:
    """Reads one SSE stream in a thread and queues every message and comment, parsed from the raw lines (so
    the test sees exactly what the server wrote: ``id:``, ``retry:``, ``: ping``)."""

    def __init__(
        self,
        base_url: str,
        path: str,
        *,
        last_event_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.messages: queue.Queue[Message | None] = queue.Queue()
        self.status_code: int | None = None
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10.0, read=30.0), verify=False)
        request_headers = {"Accept": "text/event-stream", **(headers or {})}
        if last_event_id is not None:
            request_headers["Last-Event-ID"] = last_event_id
        self._cm = self._client.stream("GET", path, headers=request_headers)
        self._response = self._cm.__enter__()
        self.status_code = self._response.status_code
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        current = Message()
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if current.event or current.data or current.id or current.retry is not None:
                        self.messages.put(current)
                    current = Message()
                elif line.startswith(":"):
                    self.messages.put(Message(comment=line[1:].strip()))
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "retry":
                        current.retry = int(value)
                    elif name in ("event", "data", "id"):
                        setattr(current, name, value)
        except (httpx.HTTPError, RuntimeError):
            pass  # the test closed the stream
        finally:
            self.messages.put(None)  # end of stream

    def next(self, timeout: float = 5.0, *, skip_comments: bool = True) -> Message:
        """The next message (comments skipped unless asked); fails the test on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = self.messages.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no SSE message within {timeout} s") from None
            if msg is None:
                raise AssertionError("SSE stream ended")
            if msg.comment is not None and skip_comments:
                continue
            return msg

    def next_event(self, name: str, timeout: float = 5.0) -> Message:
        """The next message with event ``name`` (others skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.0, deadline - time.monotonic()))
            if msg.event == name:
                return msg

    def assert_no_event(self, name: str, within: float) -> None:
        """Fail if an event ``name`` arrives within ``within`` seconds."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                return
            if msg is None:
                return
            assert msg.event != name, f"unexpected {name} event: {msg.data}"

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the server ends the stream."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.messages.get(timeout=max(0.0, deadline - time.monotonic())) is None:
                    return
            except queue.Empty:
                break
        raise AssertionError("stream did not end")

    def close(self) -> None:
        """Drop the connection from the client side."""
        self._cm.__exit__(None, None, None)
        self._client.close()
        self._thread.join(timeout=5)


@pytest.fixture
def open_stream() -> Iterator[Any]:
    """Factory ``open_stream(server, agent_id, session_id, last_event_id=None) -> SseReader``.

    Every reader is closed at the end of the test."""
    readers: list[SseReader] = []

    def factory(
        server: BackendServer, agent_id: str, session_id: str, last_event_id: str | None = None
    ) -> SseReader:
        reader = SseReader(
            server.url,
            f"/agent/{agent_id}/session/{session_id}/instructions/stream",
            last_event_id=last_event_id,
        )
        readers.append(reader)
        return reader

    yield factory
    for reader in readers:
        reader.close()


def make_tree(client: httpx.Client, prefix: str = "t") -> dict[str, str]:
    """Create acquisition, grid, atlas (2 tiles), 2 squares, 2 holes, 1 micrograph; return the uuids."""
    ids = {
        "acq": f"{prefix}-acq",
        "grid": f"{prefix}-grid",
        "atlas": f"{prefix}-atlas",
        "tile1": f"{prefix}-tile1",
        "tile2": f"{prefix}-tile2",
        "gs1": f"{prefix}-gs1",
        "gs2": f"{prefix}-gs2",
        "fh1": f"{prefix}-fh1",
        "fh2": f"{prefix}-fh2",
        "mic1": f"{prefix}-mic1",
    }
    ok = [
        client.post("/acquisitions", json={"uuid": ids["acq"], "name": "Session 1", "status": "started"}),
        client.post(
            f"/acquisitions/{ids['acq']}/grids",
            json={"uuid": ids["grid"], "name": "Grid_1", "acquisition_uuid": ids["acq"], "status": "none"},
        ),
        client.post(
            f"/grids/{ids['grid']}/atlas",
            json={
                "uuid": ids["atlas"],
                "grid_uuid": ids["grid"],
                "name": "Atlas",
                "atlas_id": "atlas-1",
                "tiles": [
                    {"uuid": ids["tile1"], "atlas_uuid": ids["atlas"], "tile_id": "1", "position_x": 0},
                    {"uuid": ids["tile2"], "atlas_uuid": ids["atlas"], "tile_id": "2", "position_x": 4096},
                ],
            },
        ),
        client.post(
            f"/grids/{ids['grid']}/gridsquares",
            json={"uuid": ids["gs1"], "gridsquare_id": "1001", "grid_uuid": ids["grid"], "center_x": 10},
        ),
        client.post(
            f"/grids/{ids['grid']}/gridsquares/batch",
            json={"gridsquares": [{"uuid": ids["gs2"], "gridsquare_id": "1002", "grid_uuid": ids["grid"]}]},
        ),
        client.post(
            f"/gridsquares/{ids['gs1']}/foilholes",
            json=[
                {
                    "uuid": ids["fh1"],
                    "foilhole_id": "5001",
                    "gridsquare_id": "1001",
                    "gridsquare_uuid": ids["gs1"],
                },
                {
                    "uuid": ids["fh2"],
                    "foilhole_id": "5002",
                    "gridsquare_id": "1001",
                    "gridsquare_uuid": ids["gs1"],
                },
            ],
        ),
        client.post(
            f"/foilholes/{ids['fh1']}/micrographs",
            json={
                "uuid": ids["mic1"],
                "foilhole_id": "5001",
                "foilhole_uuid": ids["fh1"],
                "defocus": -1.5e-6,
            },
        ),
    ]
    for response in ok:
        assert response.status_code == 201, response.text
    return ids
