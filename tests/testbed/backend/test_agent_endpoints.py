"""Acknowledgements, agent heartbeats, log shipping and the debug session endpoints, in both modes."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from testbed.backend import BackendServer

from .conftest import SseReader

Opener = Callable[..., SseReader]


def _ack(
    client: httpx.Client, session: str, iid: str, body: dict[str, object], agent: str = "agent-1"
) -> httpx.Response:
    return client.post(f"/agent/{agent}/session/{session}/instructions/{iid}/ack", json=body)


def _delivered(server: BackendServer, open_stream: Opener, n: int = 1) -> tuple[str, list[str], SseReader]:
    sid = server.create_session("agent-1")
    stream = open_stream(server, "agent-1", sid)
    stream.next_event("connection")
    ids = []
    for i in range(n):
        ids.append(server.create_instruction(sid, f"t{i}"))
        stream.next_event("instruction")
    return sid, ids, stream


def test_strict_acks_are_idempotent_and_two_phase(
    strict_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid, (a, b), stream = _delivered(strict_server, open_stream, 2)
    first = _ack(client, sid, a, {"status": "processed", "result": "ok", "processing_time_ms": 12})
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "success"
    assert (body["instruction_id"], body["agent_id"], body["session_id"]) == (a, "agent-1", sid)
    repeat = _ack(client, sid, a, {"status": "processed", "result": "ok"})
    assert repeat.status_code == 200
    assert repeat.json()["acknowledged_at"] == body["acknowledged_at"]
    assert _ack(client, sid, a, {"status": "received"}).status_code == 200  # late `received`: no change
    conflict = _ack(client, sid, a, {"status": "failed", "error_message": "boom"})
    assert conflict.status_code == 409
    assert _ack(client, sid, b, {"status": "received"}).status_code == 200
    assert _ack(client, sid, b, {"status": "received"}).status_code == 200
    assert _ack(client, sid, b, {"status": "declined", "error_message": "unknown type"}).status_code == 200
    history = {i["instruction_id"]: i for i in strict_server.instructions(sid)}
    assert (history[a]["status"], history[a]["ack_status"]) == ("acknowledged", "processed")
    assert [x["outcome"] for x in history[a]["acknowledgements"]] == [
        "accepted",
        "repeated",
        "repeated",
        "rejected",
    ]
    assert history[a]["acknowledgements"][-1]["http_status"] == 409
    assert (history[b]["status"], history[b]["ack_status"]) == ("acknowledged", "declined")
    assert [h["event"] for h in history[b]["history"]] == ["created", "sent", "received", "acknowledged"]
    # strict accepts an ack after the stream went away (the agent acks from its journal)
    stream.close()
    c = strict_server.create_instruction(sid, "late")
    assert _ack(client, sid, c, {"status": "processed"}).status_code == 409  # never delivered


def test_strict_ack_errors(strict_server: BackendServer, client: httpx.Client, open_stream: Opener) -> None:
    sid, (a,), _ = _delivered(strict_server, open_stream)
    other = strict_server.create_session("agent-2")
    assert _ack(client, "nope", a, {"status": "processed"}).status_code == 404
    assert _ack(client, sid, a, {"status": "processed"}, agent="agent-2").status_code == 403
    assert _ack(client, sid, "nope", {"status": "processed"}).status_code == 404
    assert _ack(client, other, a, {"status": "processed"}, agent="agent-2").status_code == 400
    assert _ack(client, sid, a, {"status": "done"}).status_code == 422
    extra = _ack(client, sid, a, {"status": "processed", "instruction_id": a})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"
    assert strict_server.instructions(sid)[0]["status"] == "sent"


def test_smartem_acks_are_one_shot_and_errors_are_500(
    smartem_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid, (a, b), _ = _delivered(smartem_server, open_stream, 2)
    assert _ack(client, sid, a, {"status": "processed"}).status_code == 200
    second = _ack(client, sid, a, {"status": "processed"})
    assert second.status_code == 500
    assert second.json() == {"detail": "Internal server error"}
    assert _ack(client, sid, b, {"status": "received"}).status_code == 200
    assert _ack(client, sid, b, {"status": "processed"}).status_code == 500
    history = {i["instruction_id"]: i for i in smartem_server.instructions(sid)}
    assert history[b]["ack_status"] == "received"  # the stored ack stays `received`
    assert history[b]["status"] == "acknowledged"
    for session, iid, agent in ((sid, "nope", "agent-1"), ("nope", a, "agent-1"), (sid, a, "agent-9")):
        assert _ack(client, session, iid, {"status": "processed"}, agent=agent).status_code == 500
    # unknown fields are a 422 on SmartEM too, and the instruction stays `sent`
    c = smartem_server.create_instruction(sid, "c")
    assert _ack(client, sid, c, {"status": "processed", "extra": 1}).status_code == 422


def test_smartem_ack_needs_a_connection(smartem_server: BackendServer, client: httpx.Client) -> None:
    sid = smartem_server.create_session("agent-1")
    iid = smartem_server.create_instruction(sid, "a")
    assert _ack(client, sid, iid, {"status": "processed"}).status_code == 500


def test_heartbeat_needs_active_connection(
    any_server: BackendServer, client: httpx.Client, open_stream: Opener
) -> None:
    sid = any_server.create_session("agent-1")
    assert client.post(f"/agent/agent-1/session/{sid}/heartbeat").status_code == 404
    stream = open_stream(any_server, "agent-1", sid)
    connection_id = stream.next_event("connection").json()["connection_id"]
    response = client.post(f"/agent/agent-1/session/{sid}/heartbeat")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["connection_id"] == connection_id
    assert "heartbeat_timestamp" in body
    beats = client.get("/testbed/heartbeats", params={"session_id": sid}).json()
    assert [b["connection_id"] for b in beats] == [connection_id]
    assert client.post(f"/agent/agent-2/session/{sid}/heartbeat").status_code == 404


def _records(n: int) -> list[dict[str, str]]:
    return [
        {"timestamp": "2026-01-01T00:00:00", "level": "INFO", "logger_name": "agent", "message": f"m{i}"}
        for i in range(n)
    ]


def test_logs(any_server: BackendServer, client: httpx.Client) -> None:
    sid = any_server.create_session("agent-1")
    url = f"/agent/agent-1/session/{sid}/logs"
    assert client.post(url, json={"logs": _records(3)}).json() == {"stored": 3}
    stored = client.get("/testbed/logs", params={"session_id": sid}).json()
    assert [r["message"] for r in stored] == ["m0", "m1", "m2"]
    assert client.post("/agent/agent-1/session/nope/logs", json={"logs": _records(1)}).status_code == 404
    assert client.post(f"/agent/agent-2/session/{sid}/logs", json={"logs": _records(1)}).status_code == 403
    assert client.post(url, json={"logs": [{"level": "INFO"}]}).status_code == 422


def test_log_batch_cap(strict_server: BackendServer, smartem_server: BackendServer) -> None:
    for server, expected in ((strict_server, 422), (smartem_server, 200)):
        sid = server.create_session("agent-1")
        with httpx.Client(base_url=server.url, verify=False) as client:
            response = client.post(f"/agent/agent-1/session/{sid}/logs", json={"logs": _records(600)})
            assert response.status_code == expected
            stored = len(client.get("/testbed/logs", params={"session_id": sid}).json())
        assert stored == (0 if expected == 422 else 500)


def test_debug_sessions(any_server: BackendServer, client: httpx.Client) -> None:
    created = client.post(
        "/debug/sessions/create", json={"session_id": "s-1", "agent_id": "microscope-1", "name": "visit"}
    ).json()
    assert (created["session_id"], created["agent_id"], created["status"]) == (
        "s-1",
        "microscope-1",
        "created",
    )
    managed = client.post("/debug/sessions/create-managed", json={"agent_id": "microscope-2"}).json()
    assert managed["status"] == "created"
    assert managed["session_id"] != "s-1"
    listed = client.get("/debug/sessions").json()
    assert listed["total_count"] == 2
    assert {s["agent_id"] for s in listed["active_sessions"]} == {"microscope-1", "microscope-2"}
    assert (
        client.post("/debug/sessions/create", json={"agent_id": "a", "acquisition_uuid": "none"}).status_code
        == 404
    )
    closed = client.delete("/debug/sessions/s-1/close")
    assert closed.json()["status"] == "closed"
    assert client.get("/debug/sessions").json()["total_count"] == 1
    statuses = {s["session_id"]: s["status"] for s in client.get("/testbed/sessions").json()}
    assert statuses["s-1"] == "ended"
    missing = client.delete("/debug/sessions/nope/close").status_code
    assert missing == (404 if any_server.options.compat == "strict" else 500)
    stats = client.get("/debug/connection-stats").json()
    assert stats["active_sessions"] == 1
    assert client.get("/debug/agent-connections").json()["total_count"] == 0


def test_debug_session_instructions(any_server: BackendServer, client: httpx.Client) -> None:
    sid = any_server.create_session("agent-1")
    empty = client.get(f"/debug/session/{sid}/instructions")
    assert empty.json()["total_instructions"] == 0
    any_server.create_instruction(sid, "a", metadata={"origin": "test"})
    response = client.get(f"/debug/session/{sid}/instructions")
    if any_server.options.compat == "smartem":
        assert response.status_code == 500  # SmartEM's serialisation bug
    else:
        assert response.json()["instructions"][0]["metadata"] == {"origin": "test"}


def test_create_instruction_defaults_and_fractional_expiry(
    any_server: BackendServer, client: httpx.Client
) -> None:
    sid = any_server.create_session("agent-1")
    created = client.post(f"/debug/session/{sid}/create-instruction", json={}).json()
    assert created["status"] == "created"
    client.post(f"/debug/session/{sid}/create-instruction", json={"expires_in_minutes": 0.5})
    client.post(f"/debug/session/{sid}/create-instruction", json={"expires_in_minutes": None})
    items = any_server.instructions(sid)
    assert items[0]["instruction_type"] == "test.instruction"
    assert items[0]["payload"] == {"test": True}
    assert items[0]["priority"] == "normal"
    assert items[0]["expires_at"] > items[1]["expires_at"]  # 60 min default vs 30 s
    assert items[2]["expires_at"] is None


def test_log_timestamp_with_offset_is_refused(
    strict_server: BackendServer, smartem_server: BackendServer
) -> None:
    # SmartEM stores log timestamps in a `timestamp without time zone` column: an offset crashes the insert.
    for server, expected in ((strict_server, 422), (smartem_server, 500)):
        sid = server.create_session("agent-1")
        aware = [{**_records(1)[0], "timestamp": "2026-01-01T00:00:00+01:00"}]
        with httpx.Client(base_url=server.url, verify=False) as client:
            response = client.post(f"/agent/agent-1/session/{sid}/logs", json={"logs": aware})
            assert response.status_code == expected
            assert client.get("/testbed/logs", params={"session_id": sid}).json() == []
