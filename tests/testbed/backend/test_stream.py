"""The SSE instruction stream: events, ids, resume, re-send, ordering, heartbeats, pings, expiry, restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import httpx_sse

from testbed.backend import BackendServer

from .conftest import FAST, SseReader

Opener = Callable[..., SseReader]


def _ack(
    client: httpx.Client, agent: str, session: str, iid: str, status: str = "processed"
) -> httpx.Response:
    return client.post(f"/agent/{agent}/session/{session}/instructions/{iid}/ack", json={"status": status})


def test_connection_and_instruction_events_strict(
    strict_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = strict_server.create_session("agent-1")
    stream = open_stream(strict_server, "agent-1", sid)
    assert stream.status_code == 200
    hello = stream.next()
    assert hello.event == "connection"
    assert hello.retry == FAST["retry_ms"]
    data = hello.json()
    assert data["type"] == "connection"
    assert data["status"] == "connected"
    assert (data["agent_id"], data["session_id"]) == ("agent-1", sid)
    iid = strict_server.create_instruction(
        sid,
        "microscope.control.move_stage",
        {"x": 1},
        priority="high",
        sequence_number=7,
        metadata={"k": "v"},
    )
    msg = stream.next_event("instruction")
    assert msg.id is not None
    assert msg.id.isdigit()
    body = msg.json()
    assert body == {
        "type": "instruction",
        "instruction_id": iid,
        "agent_id": "agent-1",
        "session_id": sid,
        "instruction_type": "microscope.control.move_stage",
        "payload": {"x": 1},
        "sequence_number": 7,
        "priority": "high",
        "created_at": body["created_at"],
        "expires_at": body["expires_at"],
        "metadata": {"k": "v"},
    }
    history = strict_server.instructions(sid)[0]
    assert history["status"] == "sent"
    assert history["deliveries"][0]["event_id"] == int(msg.id)
    assert history["deliveries"][0]["connection_id"] == data["connection_id"]


def test_delivery_is_prompt_on_open_stream(strict_server: BackendServer, client: httpx.Client) -> None:
    """Through httpx-sse (the agent's client library): an instruction arrives right after its creation."""
    sid = strict_server.create_session("agent-1")
    with (
        httpx.Client(base_url=strict_server.url, timeout=10.0, verify=False) as sse_client,
        httpx_sse.connect_sse(
            sse_client, "GET", f"/agent/agent-1/session/{sid}/instructions/stream"
        ) as source,
    ):
        events = source.iter_sse()
        assert next(events).event == "connection"
        started = time.perf_counter()
        client.post(f"/debug/session/{sid}/create-instruction", json={"instruction_type": "t", "payload": {}})
        event = next(events)
        elapsed = time.perf_counter() - started
    assert event.event == "instruction"
    # Generous bound for a loaded CI box; the figure itself (a few ms) is measured by the benchmark.
    assert elapsed < 1.0


def test_numeric_priority_order_strict(strict_server: BackendServer, open_stream: Opener) -> None:
    sid = strict_server.create_session("agent-1")
    make = strict_server.create_instruction
    make(sid, "low", priority="low")
    make(sid, "normal-2", priority="normal", sequence_number=2)
    make(sid, "critical", priority="critical")
    make(sid, "normal-none", priority="normal")
    make(sid, "normal-1", priority="normal", sequence_number=1)
    make(sid, "high", priority="high")
    stream = open_stream(strict_server, "agent-1", sid)
    got = [stream.next_event("instruction").json()["instruction_type"] for _ in range(6)]
    assert got == ["critical", "high", "normal-1", "normal-2", "normal-none", "low"]


def test_text_priority_order_smartem(smartem_server: BackendServer, open_stream: Opener) -> None:
    sid = smartem_server.create_session("agent-1")
    for priority in ("critical", "high", "low", "normal"):
        smartem_server.create_instruction(sid, priority, priority=priority)
    stream = open_stream(smartem_server, "agent-1", sid)
    got = [stream.next_event("instruction").json()["instruction_type"] for _ in range(4)]
    assert got == ["normal", "low", "high", "critical"]  # SmartEM sorts the text descending


def test_strict_rejects_unknown_priority(strict_server: BackendServer, client: httpx.Client) -> None:
    sid = strict_server.create_session("agent-1")
    bad = client.post(
        f"/debug/session/{sid}/create-instruction", json={"instruction_type": "t", "priority": "urgent"}
    )
    assert bad.status_code == 422
    unknown = client.post("/debug/session/nope/create-instruction", json={"instruction_type": "t"})
    assert unknown.status_code == 404


def test_resend_unacknowledged_on_reconnect(
    strict_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = strict_server.create_session("agent-1")
    first = open_stream(strict_server, "agent-1", sid)
    first.next_event("connection")
    a = strict_server.create_instruction(sid, "a")
    msg_a = first.next_event("instruction")
    b = strict_server.create_instruction(sid, "b")
    msg_b = first.next_event("instruction")
    assert _ack(client, "agent-1", sid, b).status_code == 200
    first.close()
    # No Last-Event-ID (a restarted agent): every sent-but-unacknowledged instruction comes again.
    second = open_stream(strict_server, "agent-1", sid)
    again = second.next_event("instruction")
    assert again.json()["instruction_id"] == a
    assert int(again.id or 0) > int(msg_a.id or 0)  # a new delivery id
    second.assert_no_event("instruction", 0.3)
    second.close()
    # Last-Event-ID newer than the re-send: nothing is lost in flight, nothing is re-sent.
    third = open_stream(strict_server, "agent-1", sid, last_event_id=again.id)
    third.assert_no_event("instruction", 0.3)
    third.close()
    # Last-Event-ID older than a delivery: that delivery may have been lost, so it is re-sent.
    fourth = open_stream(strict_server, "agent-1", sid, last_event_id=msg_b.id)
    assert fourth.next_event("instruction").json()["instruction_id"] == a
    history = strict_server.instructions(sid)
    assert [len(i["deliveries"]) for i in history] == [3, 1]
    assert [h["event"] for h in history[0]["history"]] == ["created", "sent", "resent", "resent"]


def test_last_event_id_from_elsewhere_resends_everything(
    strict_server: BackendServer, open_stream: Opener
) -> None:
    sid = strict_server.create_session("agent-1")
    first = open_stream(strict_server, "agent-1", sid)
    strict_server.create_instruction(sid, "a")
    first.next_event("instruction")
    first.close()
    for bogus in ("999999", "not-a-number"):
        stream = open_stream(strict_server, "agent-1", sid, last_event_id=bogus)
        assert stream.next_event("instruction").json()["instruction_type"] == "a"
        stream.close()


def test_instructions_created_while_disconnected_follow_connection(
    any_server: BackendServer, open_stream: Opener
) -> None:
    sid = any_server.create_session("agent-1")
    iid = any_server.create_instruction(sid, "queued")
    stream = open_stream(any_server, "agent-1", sid)
    assert stream.next().event == "connection"
    assert stream.next().json()["instruction_id"] == iid


def test_smartem_no_id_no_resend_but_ack_still_works(
    smartem_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = smartem_server.create_session("agent-1")
    first = open_stream(smartem_server, "agent-1", sid)
    hello = first.next_event("connection")
    assert hello.retry is None
    iid = smartem_server.create_instruction(sid, "a")
    msg = first.next_event("instruction")
    assert msg.id is None
    first.close()
    second = open_stream(smartem_server, "agent-1", sid, last_event_id="1")
    second.next_event("connection")
    second.assert_no_event("instruction", 0.4)
    # the dropped connection row stays active (SmartEM does not notice), so the late ack succeeds
    assert _ack(client, "agent-1", sid, iid).status_code == 200


def test_heartbeat_events_and_ping_comments(
    any_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = any_server.create_session("agent-1")
    stream = open_stream(any_server, "agent-1", sid)
    connection_id = stream.next_event("connection").json()["connection_id"]
    ping = stream.next(timeout=2.0, skip_comments=False)
    assert ping.comment == "ping"
    beat = stream.next_event("heartbeat", timeout=2.0)
    data = beat.json()
    assert data["type"] == "heartbeat"
    assert data["connection_id"] == connection_id
    assert "timestamp" in data
    conn = client.get("/testbed/connections", params={"session_id": sid}).json()[0]
    assert conn["status"] == "active"
    assert conn["last_heartbeat_at"] > conn["created_at"]


def test_session_validation_failed(any_server: BackendServer, open_stream: Opener) -> None:
    sid = any_server.create_session("agent-1")
    for agent, session in (("agent-2", sid), ("agent-1", "no-such-session")):
        stream = open_stream(any_server, agent, session)
        assert stream.status_code == 200
        err = stream.next()
        assert err.event == "error"
        assert err.json()["error"] == "session_validation_failed"
        assert err.json()["type"] == "error"
        stream.wait_closed()
    httpx.delete(f"{any_server.url}/debug/sessions/{sid}/close", verify=False)
    ended = open_stream(any_server, "agent-1", sid)
    assert ended.next().json()["error"] == "session_validation_failed"


def test_strict_expiry_redelivers_promptly_then_expires(
    strict_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = strict_server.create_session("agent-1")
    stream = open_stream(strict_server, "agent-1", sid)
    stream.next_event("connection")
    # long enough to be delivered on a loaded machine before it expires
    iid = strict_server.create_instruction(sid, "a", expires_in=0.5)
    stream.next_event("instruction")
    time.sleep(0.55)
    assert strict_server.sweep()["sessions_with_reset_instructions"] == [sid]
    # strict: back on the open stream at once, with a fresh expiry window
    again = stream.next_event("instruction", timeout=2.0).json()
    assert again["instruction_id"] == iid
    item = strict_server.instructions(sid)[0]
    assert item["retry_count"] == 1
    assert item["status"] == "sent"


def test_expiry_counts_retries_until_expired(tmp_path: Path) -> None:
    opts = {**FAST, "expiry_extension": 0.05}
    with BackendServer(tmp_path / "e.sqlite3", compat="smartem", **opts) as server:
        sid = server.create_session("agent-1")
        iid = server.create_instruction(sid, "a", expires_in=0.05)
        for expected in (1, 2):
            time.sleep(0.08)
            server.sweep()
            item = server.instructions(sid)[0]
            assert (item["status"], item["retry_count"]) == ("pending", expected)
        time.sleep(0.08)
        server.sweep()
        item = server.instructions(sid)[0]
        assert (item["status"], item["retry_count"]) == ("expired", 3)
        assert item["instruction_id"] == iid
        assert [h["event"] for h in item["history"]][-1] == "expired"
        # an expired instruction is never delivered
        reader = SseReader(server.url, f"/agent/agent-1/session/{sid}/instructions/stream")
        try:
            reader.next_event("connection")
            reader.assert_no_event("instruction", 0.3)
        finally:
            reader.close()


def test_smartem_expiry_waits_for_notification_or_reconnect(
    smartem_server: BackendServer, open_stream: Opener
) -> None:
    sid = smartem_server.create_session("agent-1")
    stream = open_stream(smartem_server, "agent-1", sid)
    stream.next_event("connection")
    iid = smartem_server.create_instruction(sid, "a", expires_in=0.5)
    stream.next_event("instruction")
    time.sleep(0.55)
    smartem_server.sweep()
    stream.assert_no_event("instruction", 0.4)  # not pushed by itself
    smartem_server.create_instruction(sid, "b")  # the next notification drains it
    got = {stream.next_event("instruction").json()["instruction_id"] for _ in range(2)}
    assert iid in got


def test_housekeeping_runs_by_itself(tmp_path: Path) -> None:
    opts = {**FAST, "expiry_sweep_interval": 0.1}
    with BackendServer(tmp_path / "h.sqlite3", **opts) as server:
        sid = server.create_session("agent-1")
        server.create_instruction(sid, "a", expires_in=0.05)
        deadline = time.monotonic() + 3.0
        while server.instructions(sid)[0]["retry_count"] == 0:
            assert time.monotonic() < deadline, "sweep never ran"
            time.sleep(0.05)


def test_stale_connection_is_closed_by_sweep(tmp_path: Path) -> None:
    opts = {**FAST, "stale_connection_after": 0.1}
    with BackendServer(tmp_path / "s.sqlite3", compat="smartem", **opts) as server:
        sid = server.create_session("agent-1")
        reader = SseReader(server.url, f"/agent/agent-1/session/{sid}/instructions/stream")
        reader.next_event("connection")
        reader.close()
        with httpx.Client(base_url=server.url, verify=False) as client:
            assert client.post(f"/agent/agent-1/session/{sid}/heartbeat").status_code == 200
            time.sleep(0.3)
            assert server.sweep()["closed_connections"] == 1
            conn = client.get("/testbed/connections", params={"session_id": sid}).json()[0]
            assert (conn["status"], conn["close_reason"]) == ("closed", "stale_connection")
            assert client.post(f"/agent/agent-1/session/{sid}/heartbeat").status_code == 404


def test_strict_closes_connection_row_when_client_leaves(
    strict_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = strict_server.create_session("agent-1")
    stream = open_stream(strict_server, "agent-1", sid)
    stream.next_event("connection")
    stream.close()
    deadline = time.monotonic() + 3.0
    while client.get("/testbed/connections", params={"session_id": sid}).json()[0]["status"] != "closed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get("/testbed/streams").json() == {"open": 0}


def test_restart_on_same_port_keeps_everything(tmp_path: Path) -> None:
    server = BackendServer(tmp_path / "r.sqlite3", **FAST).start()
    try:
        url = server.url
        with httpx.Client(base_url=url, verify=False) as client:
            assert client.post("/acquisitions", json={"uuid": "a", "name": "n"}).status_code == 201
        sid = server.create_session("agent-1")
        reader = SseReader(url, f"/agent/agent-1/session/{sid}/instructions/stream")
        iid = server.create_instruction(sid, "a")
        assert reader.next_event("instruction").json()["instruction_id"] == iid
        server.stop()
        reader.wait_closed()  # the server ended the stream
        reader.close()
        server.start()
        assert server.url == url
        with httpx.Client(base_url=url, verify=False) as client:
            assert client.get("/acquisitions/a").json()["name"] == "n"
        again = SseReader(url, f"/agent/agent-1/session/{sid}/instructions/stream")
        try:
            assert again.next_event("instruction").json()["instruction_id"] == iid  # unacked: re-sent
        finally:
            again.close()
    finally:
        server.stop()
