"""The Athena stand-in rejects what the real service would (strict shapes, enums, unknown sessions)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from testbed.athena import AthenaServer


@pytest.fixture
def http() -> Iterator[tuple[AthenaServer, httpx.Client]]:
    with AthenaServer() as server, httpx.Client(base_url=server.url + "/api/v1") as client:
        yield server, client


def test_strict_decisions(http: tuple[AthenaServer, httpx.Client]) -> None:
    server, client = http
    sid = client.post("/Session", json={"sessionName": "s", "sessionId": "abc"}).json()["sessionId"]
    good = {
        "sessionId": sid,
        "areaId": 1,
        "decisionType": "include",
        "decisionValue": "true",
        "decidedBy": "t",
    }
    assert client.post("/Decision", json=good).status_code == 200
    assert client.post("/Decision", json=good | {"decisionType": "bogus"}).status_code == 422
    assert client.post("/Decision", json=good | {"areaId": "1"}).status_code == 422  # ids are integers
    assert client.post("/Decision", json=good | {"extra": 1}).status_code == 422
    assert client.post("/Decision", json=good | {"sessionId": "zzz"}).status_code == 404
    assert len(server.decisions()) == 1
    assert client.get("/testbed/decisions", params={}).status_code == 404  # test reads live outside /api/v1
    assert httpx.get(server.url + "/testbed/decisions").json()[0]["areaId"] == 1


def test_areas_filter_and_delete(http: tuple[AthenaServer, httpx.Client]) -> None:
    _, client = http
    client.post("/Session", json={"sessionName": "s", "sessionId": "s1"})
    client.post("/Areas", json=[{"sessionId": "s1", "areaId": 5, "areaType": "gridsquare"}])
    client.post("/Area", json={"sessionId": "s1", "areaId": 50, "areaType": "foilhole", "parentId": 5})
    holes = client.get("/Session/s1/Areas", params={"areaType": "foilhole", "parentAreaId": 5}).json()
    assert [a["areaId"] for a in holes] == [50]
    record = {
        "sessionId": "s1",
        "areaId": 5,
        "decisionType": "include",
        "decisionValue": "x",
        "decidedBy": "t",
    }
    client.post("/Decisions", json=[record, record])
    assert client.delete("/Session/s1/Decisions").json() == {"deleted": 2}
    assert client.get("/Session/s1/Decisions").json() == []


def test_restart_keeps_state() -> None:
    server = AthenaServer()
    with server:
        httpx.post(server.url + "/api/v1/Session", json={"sessionName": "s", "sessionId": "keep"})
        port = server.url
    with server:
        assert server.url == port
        assert httpx.get(server.url + "/api/v1/Session/keep/IsRegistered").json() is True
