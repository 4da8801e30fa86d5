"""SSEAgentClient over httpx.MockTransport: events, reconnects, backoff reset, retry:, Last-Event-ID, session errors,
give-up, stop(), 401 refresh, acknowledgements and the heartbeat sender."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from backend_client import (
    AgentHeartbeatSender,
    AsyncSmartEMAPIClient,
    BackendError,
    BackendUnavailableError,
    ClientCredentialsAuth,
    ConnectionEvent,
    InstructionEvent,
    RetryPolicy,
    SessionError,
    SSEAgentClient,
    classify_ack_failure,
)
from backend_client.errors import NotFoundError, RequestRejectedError, ServerError

STREAM = "/agent/a1/session/s1/instructions/stream"
SSE_HEADERS = {"content-type": "text/event-stream"}


def sse(event: str, data: dict[str, Any], event_id: str | None = None, retry: int | None = None) -> str:
    lines = [f"event: {event}", f"data: {json.dumps(data)}"]
    if event_id:
        lines.append(f"id: {event_id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    return "\n".join(lines) + "\n\n"


def connection(cid: str = "c1") -> str:
    return sse(
        "connection", {"type": "connection", "agent_id": "a1", "session_id": "s1", "connection_id": cid}
    )


def instruction(iid: str, event_id: str | None = None) -> str:
    data = {
        "type": "instruction",
        "instruction_id": iid,
        "instruction_type": "agent.status.request",
        "payload": {},
    }
    return sse("instruction", data, event_id)


def client(handler: Callable[[httpx.Request], Any], **kwargs: Any) -> SSEAgentClient:
    defaults: dict[str, Any] = {"initial_retry_delay": 0.0, "max_retry_delay": 0.01, "ack_retry_delay": 0.0}
    defaults.update(kwargs)
    return SSEAgentClient(
        "http://b", "a1", "s1", transport=httpx.MockTransport(handler), rng=random.Random(0), **defaults
    )


class Streams:
    """Answers the n-th stream request with bodies[n]; further requests get the last entry."""

    def __init__(self, *bodies: str | httpx.Response) -> None:
        self.bodies = list(bodies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = self.bodies[min(len(self.requests), len(self.bodies)) - 1]
        if isinstance(body, httpx.Response):
            return body
        return httpx.Response(200, headers=SSE_HEADERS, text=body)


async def collect(sse_client: SSEAgentClient, count: int, **kwargs: Any) -> list[Any]:
    events: list[Any] = []
    async for event in sse_client.events(**kwargs):
        events.append(event)
        if len(events) >= count:
            sse_client.stop()
    return events


async def test_events_are_parsed_into_models_and_the_stream_reconnects_after_it_ends() -> None:
    streams = Streams(
        connection("c1") + instruction("i1") + sse("heartbeat", {"type": "heartbeat", "timestamp": "t"}),
        ": ping\n\n" + connection("c2") + instruction("i2"),
    )
    sse_client = client(streams)
    events = await collect(sse_client, 5)
    assert [type(e).__name__ for e in events] == [
        "ConnectionEvent", "InstructionEvent", "HeartbeatEvent", "ConnectionEvent", "InstructionEvent",
    ]  # fmt: skip
    assert isinstance(events[1], InstructionEvent)
    assert events[1].instruction_type == "agent.status.request"
    assert sse_client.connection_id == "c2"
    assert sse_client.stats["connections"] == 2
    assert sse_client.stats["failures"] == 0
    assert streams.requests[0].headers["accept"] == "text/event-stream"
    assert "last-event-id" not in streams.requests[1].headers  # SmartEM events carry no id


async def test_last_event_id_is_sent_when_events_carry_ids_and_retry_is_honoured() -> None:
    streams = Streams(
        sse("connection", {"type": "connection"}, retry=2500) + instruction("i1", "d-7"), connection()
    )
    sse_client = client(streams, max_retry_delay=60.0)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    sse_client._sleep = fake_sleep  # type: ignore[method-assign]
    await collect(sse_client, 3)
    assert streams.requests[1].headers["last-event-id"] == "d-7"
    assert sse_client.server_retry_delay == 2.5
    assert sleeps == [2.5]  # the server's retry: replaced initial_retry_delay after a healthy connection


async def test_session_validation_failed_raises_without_reconnecting() -> None:
    errors: list[Exception] = []
    streams = Streams(
        sse("error", {"type": "error", "error": "session_validation_failed", "message": "bad agent"})
    )
    sse_client = client(streams, max_retries=None)
    with pytest.raises(SessionError, match="session_validation_failed: bad agent"):
        await sse_client.stream_instructions_async(lambda d: None, error_callback=errors.append)
    assert len(streams.requests) == 1
    assert isinstance(errors[-1], SessionError)
    assert not sse_client.running


@pytest.mark.parametrize("status", [403, 404])
async def test_403_and_404_on_the_stream_are_session_errors(status: int) -> None:
    streams = Streams(httpx.Response(status, json={"detail": "Session not found"}))
    with pytest.raises(SessionError, match="Session not found"):
        await collect(client(streams, max_retries=None), 1)
    assert len(streams.requests) == 1


async def test_other_error_events_are_transient() -> None:
    streams = Streams(
        connection() + sse("error", {"type": "error", "error": "listen_setup_failed", "message": "db"}),
        connection("c2") + instruction("i1"),
    )
    sse_client = client(streams)
    events = await collect(sse_client, 4)
    assert isinstance(events[-1], InstructionEvent)
    assert sse_client.stats["failures"] == 1


async def test_gives_up_after_max_retries_consecutive_failures() -> None:
    errors: list[Exception] = []
    streams = Streams(httpx.Response(503))
    sse_client = client(streams, max_retries=3)
    with pytest.raises(BackendUnavailableError, match="gave up after 4 consecutive"):
        await sse_client.stream_instructions_async(lambda d: None, error_callback=errors.append)
    assert len(streams.requests) == 4
    assert len(errors) == 4
    assert all(isinstance(e, BackendUnavailableError) for e in errors)


async def test_max_retries_none_retries_forever_and_a_healthy_connection_resets_the_count() -> None:
    bodies: list[str | httpx.Response] = [httpx.Response(502)] * 25 + [connection() + instruction("i1")]
    sse_client = client(Streams(*bodies), max_retries=None)
    events = await collect(sse_client, 2)
    assert isinstance(events[1], InstructionEvent)
    assert sse_client.consecutive_failures == 0
    assert sse_client.stats["failures"] == 25


async def test_backoff_grows_with_consecutive_failures_and_resets_after_health() -> None:
    bodies: list[str | httpx.Response] = (
        [httpx.Response(503)] * 4 + [connection()] + [httpx.Response(503)] * 2
    )
    bodies.append(connection() + instruction("i1"))
    sse_client = client(Streams(*bodies), initial_retry_delay=1.0, max_retry_delay=100.0)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    sse_client._sleep = fake_sleep  # type: ignore[method-assign]
    await collect(sse_client, 3)
    assert len(sleeps) == 7
    ceilings = [1, 2, 4, 8, 1, 1, 2]  # full jitter in [1, ceiling]; reset after the healthy connection
    assert all(1.0 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))


async def test_callback_errors_are_reported_and_the_stream_goes_on() -> None:
    errors: list[Exception] = []
    received: list[str] = []
    sse_client = client(Streams(connection() + instruction("bad") + instruction("good")))

    async def on_instruction(data: dict[str, Any]) -> None:
        if data["instruction_id"] == "bad":
            raise RuntimeError("handler bug")
        received.append(data["instruction_id"])
        sse_client.stop()

    await sse_client.stream_instructions_async(on_instruction, error_callback=errors.append)
    assert received == ["good"]
    assert [str(e) for e in errors] == ["handler bug"]


async def test_malformed_event_is_reported_not_fatal() -> None:
    errors: list[Exception] = []
    body = connection() + "event: instruction\ndata: {not json\n\n" + instruction("i1")
    events = await collect(client(Streams(body)), 2, on_error=errors.append)
    assert isinstance(events[1], InstructionEvent)
    assert len(errors) == 1
    assert "non-JSON" in str(errors[0])


def test_stop_from_another_thread_interrupts_a_blocked_read_promptly() -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield connection().encode()
        await asyncio.sleep(3600)
        yield b""

    sse_client = client(lambda r: httpx.Response(200, headers=SSE_HEADERS, content=endless()))
    connected: list[dict[str, Any]] = []
    thread = threading.Thread(
        target=sse_client.stream_instructions,
        args=(lambda d: None,),
        kwargs={"connection_callback": connected.append},
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not sse_client.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sse_client.connected
    assert connected[0]["connection_id"] == "c1"
    started = time.monotonic()
    sse_client.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert not sse_client.connected


async def test_stop_interrupts_a_backoff_sleep() -> None:
    sse_client = client(Streams(httpx.Response(503)), initial_retry_delay=30.0, max_retry_delay=60.0)
    task = asyncio.create_task(sse_client.stream_instructions_async(lambda d: None))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    sse_client.stop()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1.0


async def test_401_refreshes_the_token_and_reconnects() -> None:
    issued: list[str] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        issued.append(f"t{len(issued) + 1}")
        return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300})

    auth = ClientCredentialsAuth(
        "http://kc/token", "agent", "secret", async_transport=httpx.MockTransport(token_endpoint)
    )
    seen: list[str] = []

    def backend(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] != f"Bearer t{len(issued)}" or len(issued) < 2:
            return httpx.Response(401, json={"detail": "Token expired"})
        return httpx.Response(200, headers=SSE_HEADERS, text=connection() + instruction("i1"))

    sse_client = client(backend, auth=auth)
    events = await collect(sse_client, 2)
    assert isinstance(events[0], ConnectionEvent)
    assert seen == ["Bearer t1", "Bearer t2"]


async def test_non_event_stream_answer_is_a_failure() -> None:
    streams = Streams(httpx.Response(200, json={"oops": True}), connection())
    errors: list[Exception] = []
    await collect(client(streams), 1, on_error=errors.append)
    assert "text/event-stream" in str(errors[0])


# -- acknowledgements ----------------------------------------------------------------------------------------------


def ack_backend(*answers: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[Any]]:
    bodies: list[Any] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/agent/a1/session/s1/instructions/i1/ack"
        bodies.append(json.loads(request.content))
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, bodies


def ok() -> httpx.Response:
    body = {
        "status": "success",
        "instruction_id": "i1",
        "acknowledged_at": "t",
        "agent_id": "a1",
        "session_id": "s1",
    }
    return httpx.Response(200, json=body)


def test_ack_sends_only_contract_fields_and_succeeds() -> None:
    handler, bodies = ack_backend(ok())
    result = client(handler).acknowledge("i1", "processed", result='{"ok": true}', processing_time_ms=12)
    assert result.outcome == "acknowledged"
    assert result.attempts == 1
    assert bodies == [{"status": "processed", "result": '{"ok": true}', "processing_time_ms": 12}]


def test_repeated_ack_invalid_status_counts_as_already_acknowledged() -> None:
    handler, _ = ack_backend(
        httpx.Response(
            400, json={"detail": "Instruction i1 cannot be acknowledged (invalid status: acknowledged)"}
        )
    )
    sse_client = client(handler)
    result = sse_client.acknowledge("i1", "processed")
    assert result.outcome == "already_acknowledged"
    response = sse_client.acknowledge_instruction("i1", "processed")
    assert response.status == "already_acknowledged"
    assert response.instruction_id == "i1"


def test_ack_500_is_retried_up_to_the_cap_and_reported() -> None:
    handler, bodies = ack_backend(httpx.Response(500, json={"detail": "Internal server error"}))
    sse_client = client(handler)
    result = sse_client.acknowledge("i1", "failed", error_message="device error", retry_count=4)
    assert result.outcome == "unconfirmed"
    assert result.attempts == 4
    assert result.last_status == 500
    assert len(bodies) == 4
    with pytest.raises(ServerError):
        sse_client.acknowledge_instruction("i1", "failed", retry_count=2)


def test_ack_transient_then_success() -> None:
    handler, _bodies = ack_backend(httpx.Response(503), httpx.Response(500), ok())
    result = client(handler).acknowledge("i1", "processed")
    assert result.outcome == "acknowledged"
    assert result.attempts == 3


def test_ack_422_is_not_retried() -> None:
    handler, bodies = ack_backend(httpx.Response(422, json={"detail": [{"type": "extra_forbidden"}]}))
    result = client(handler).acknowledge("i1", "processed")
    assert result.outcome == "unconfirmed"
    assert result.attempts == 1
    assert len(bodies) == 1


async def test_async_ack_and_timeout_marks_maybe_delivered() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(400, json={"detail": "cannot be acknowledged (invalid status)"})

    result = await client(handler).acknowledge_async("i1", "processed")
    assert result.outcome == "already_acknowledged"
    assert result.maybe_delivered
    assert calls == 2


async def test_ack_while_disconnected_waits_for_the_stream() -> None:
    reconnect = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        await reconnect.wait()
        yield connection().encode()
        await asyncio.sleep(3600)
        yield b""

    acked_while_connected: list[bool] = []
    sse_client: SSEAgentClient | None = None

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == STREAM:
            return httpx.Response(200, headers=SSE_HEADERS, content=body())
        assert sse_client is not None
        acked_while_connected.append(sse_client.connected)
        return ok()

    sse_client = client(handler)
    task = asyncio.create_task(sse_client.stream_instructions_async(lambda d: None))
    await asyncio.sleep(0.05)
    ack = asyncio.create_task(sse_client.acknowledge_async("i1", "processed"))
    await asyncio.sleep(0.2)
    assert not ack.done()  # waiting for the stream
    reconnect.set()
    result = await asyncio.wait_for(ack, 2)
    assert result.outcome == "acknowledged"
    assert acked_while_connected == [True]
    sse_client.stop()
    await asyncio.wait_for(task, 2)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            RequestRejectedError("x", status_code=400, detail="cannot be acknowledged (invalid status)"),
            "already",
        ),
        (RequestRejectedError("x", status_code=409, detail="already acknowledged"), "already"),
        (NotFoundError("x", status_code=404, detail="Agent not connected"), "not_connected"),
        (
            RequestRejectedError("x", status_code=400, detail="No active connection for session"),
            "not_connected",
        ),
        (ServerError("x", status_code=500, detail="Internal server error"), "retry"),
        (BackendUnavailableError("x"), "retry"),
        (RequestRejectedError("x", status_code=422, detail="extra_forbidden"), "fatal"),
        (NotFoundError("x", status_code=404, detail="Instruction not found"), "fatal"),
    ],
)
def test_classify_ack_failure(error: BackendError, kind: str) -> None:
    assert classify_ack_failure(error) == kind


# -- heartbeats ----------------------------------------------------------------------------------------------------


async def test_heartbeat_sender_only_beats_while_connected_and_tolerates_404() -> None:
    answers = [
        httpx.Response(404, json={"detail": "no active connection"}),
        httpx.Response(200, json={"status": "success"}),
    ]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return answers.pop(0) if answers else httpx.Response(503)

    connected = [False]
    async with AsyncSmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(handler), retry=RetryPolicy.disabled()
    ) as api:
        sender = AgentHeartbeatSender(api, "a1", "s1", interval=0.02, is_connected=lambda: connected[0])
        await sender.start()
        with pytest.raises(RuntimeError, match="already running"):
            await sender.start()
        await asyncio.sleep(0.1)
        assert calls == []  # not connected: no heartbeat
        connected[0] = True
        await asyncio.sleep(0.15)
        await sender.stop()
        await sender.stop()
    assert calls[0] == "/agent/a1/session/s1/heartbeat"
    assert sender.not_connected == 1
    assert sender.sent == 1
    assert sender.failures >= 1
    assert sender.last_error is not None
    assert "503" in sender.last_error


async def test_sse_client_sends_heartbeats_while_connected() -> None:
    beats: list[float] = []

    async def endless() -> AsyncIterator[bytes]:
        yield connection().encode()
        await asyncio.sleep(3600)
        yield b""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == STREAM:
            return httpx.Response(200, headers=SSE_HEADERS, content=endless())
        beats.append(time.monotonic())
        return httpx.Response(200, json={"status": "success"})

    sse_client = client(handler, heartbeat_interval=0.05)
    task = asyncio.create_task(sse_client.stream_instructions_async(lambda d: None))
    await asyncio.sleep(0.3)
    sse_client.stop()
    await asyncio.wait_for(task, 2)
    assert len(beats) >= 2


def test_constructor_validation_and_defaults() -> None:
    sse_client = SSEAgentClient("http://b/", "a", "s")
    assert sse_client.read_timeout == 45.0 > 15.0  # longer than SmartEM's ping period
    assert sse_client.max_retries == 10
    assert sse_client.base_url == "http://b"
    with pytest.raises(ValueError, match="max_retries"):
        SSEAgentClient("http://b", "a", "s", max_retries=-1)
    with pytest.raises(ValueError, match="retry_delay"):
        SSEAgentClient("http://b", "a", "s", initial_retry_delay=5, max_retry_delay=1)
