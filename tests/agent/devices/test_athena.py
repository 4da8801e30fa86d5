"""The Athena client against the testbed stand-in over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from agent.devices.athena import AthenaClient, DecisionRecord, area_id
from agent.devices.errors import AthenaError
from testbed.athena import AthenaServer


@pytest.fixture(scope="module")
def server() -> Iterator[AthenaServer]:
    with AthenaServer() as srv:
        yield srv


@pytest.fixture
async def athena(server: AthenaServer) -> AsyncIterator[AthenaClient]:
    async with AthenaClient(server.url, decided_by="em-agent-test") as client:
        yield client


@pytest.fixture
async def session_id(athena: AthenaClient, request: pytest.FixtureRequest) -> str:
    created = await athena.create_session(request.node.name, grid_type="HoleyCarbon")
    return str(created["sessionId"])


def test_area_id_from_natural_ids() -> None:
    assert area_id(12) == 12
    assert area_id("1234") == 1234
    assert area_id("GridSquare_5678") == 5678
    assert area_id("FoilHole_99") == 99
    for bad in ("square-1", "", -1, True, "GridSquare_x"):
        with pytest.raises(ValueError):
            area_id(bad)


async def test_status_version_sessions(athena: AthenaClient, session_id: str) -> None:
    assert (await athena.status())["engineState"] == "running"
    assert "version" in await athena.version()
    assert await athena.is_registered(session_id)
    assert not await athena.is_registered("nope")
    found = await athena.find_sessions("test_status_version_sessions")
    assert [s["sessionId"] for s in found] == [session_id]
    with pytest.raises(AthenaError) as err:
        await athena.get_session("nope")
    assert err.value.status_code == 404


async def test_skip_gridsquares(athena: AthenaClient, session_id: str, server: AthenaServer) -> None:
    records = await athena.skip_gridsquares(session_id, ["GridSquare_11", 12], reason="thick ice")
    assert [(r.area_id, r.decision_type, r.decision_value) for r in records] == [
        (11, "gridSquareSelection", "false"),
        (12, "gridSquareSelection", "false"),
    ]
    stored = server.decisions(session_id)
    assert [d["areaId"] for d in stored] == [11, 12]
    assert stored[0]["decidedBy"] == "em-agent-test"
    assert stored[0]["details"] == "thick ice"
    assert stored[0]["pluginType"] == "custom"


async def test_reorder_gridsquares_and_latest(athena: AthenaClient, session_id: str) -> None:
    await athena.reorder_gridsquares(session_id, [30, 10, 20], reason="predicted quality")
    await athena.reorder_gridsquares(session_id, [10, 30, 20])
    latest = await athena.latest_decision(session_id, 30, "acquisitionOrder")
    assert latest is not None
    assert latest.decision_value == "2"
    assert await athena.latest_decision(session_id, 999, "acquisitionOrder") is None
    ranks = {d.area_id: d.decision_value for d in (await athena.get_decisions(session_id))[:3]}
    assert ranks == {30: "1", 10: "2", 20: "3"}
    with pytest.raises(ValueError, match="duplicate"):
        await athena.reorder_gridsquares(session_id, [1, 1])


async def test_foilholes(athena: AthenaClient, session_id: str, server: AthenaServer) -> None:
    order = await athena.reorder_foilholes(
        session_id, "GridSquare_5", ["FoilHole_101", "FoilHole_100"], "ice"
    )
    assert [(r.area_id, r.decision_value) for r in order] == [(101, "1"), (100, "2")]
    assert order[0].details == "gridsquare 5: ice"
    selection = await athena.select_foilholes(session_id, 5, {100: True, 101: False})
    assert selection[0].decision_type == "foilHoleSelection"
    assert json.loads(selection[0].decision_value) == [
        {"areaId": 100, "result": "true"},
        {"areaId": 101, "result": "false"},
    ]
    assert server.decisions(session_id)[-1]["areaId"] == 5


async def test_register_areas(athena: AthenaClient, session_id: str) -> None:
    areas = await athena.register_areas(
        session_id, [(5, "gridsquare", None), ("FoilHole_100", "foilhole", 5)]
    )
    assert areas[1] == {"sessionId": session_id, "areaId": 100, "areaType": "foilhole", "parentId": 5}


async def test_unknown_session_and_bad_decisions(athena: AthenaClient) -> None:
    with pytest.raises(AthenaError) as err:
        await athena.skip_gridsquares("no-such-session", [1])
    assert err.value.status_code == 404
    with pytest.raises(ValueError):
        await athena.skip_gridsquares("x", [])
    bogus = DecisionRecord(session_id="x", area_id=1, decision_type="teleport", decision_value="1")
    with pytest.raises(ValueError, match="decision type"):
        await athena.post_decisions([bogus])


async def test_unreachable_service() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with AthenaClient("http://athena.test", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(AthenaError, match="cannot reach"):
            await client.status()
