"""Every SmartEMAPIClient / AsyncSmartEMAPIClient method against httpx.MockTransport: method, path, body, parsing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from backend_client import (
    AsyncSmartEMAPIClient,
    InvalidResponseError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    SmartEMAPIClient,
)
from backend_client.models import (
    AcquisitionCreateRequest,
    AgentInstructionAcknowledgement,
    AgentLogEntry,
    AtlasCreateRequest,
    AtlasTileCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    InstructionCreateRequest,
    MicrographCreateRequest,
    SessionCreateRequest,
)
from converters.models import (
    AcquisitionData,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    GridData,
    GridSquareData,
    MicrographData,
)

ACQ = AcquisitionCreateRequest(uuid="acq-1", name="session A", status="started")
GRID = GridCreateRequest(uuid="grid-1", name="session A", acquisition_uuid="acq-1")
ATLAS = AtlasCreateRequest(
    uuid="atlas-1",
    grid_uuid="grid-1",
    name="Atlas",
    tiles=[AtlasTileCreateRequest(uuid="tile-1", atlas_uuid="atlas-1", tile_id="7")],
)
GS = GridSquareCreateRequest(uuid="gs-1", gridsquare_id="1234", grid_uuid="grid-1", defocus=-2e-6)
POS = GridSquarePositionRequest(center_x=10, center_y=20, size_width=5, size_height=6, gridsquare_uuid="gs-1")
FH = FoilHoleCreateRequest(uuid="fh-1", foilhole_id="55", gridsquare_id="1234", gridsquare_uuid="gs-1")
MIC = MicrographCreateRequest(uuid="mic/1", foilhole_id="55", foilhole_uuid="fh-1")
ACK = AgentInstructionAcknowledgement(status="processed", result="ok")

ENTITY = {"uuid": "x"}
ACK_RESPONSE = {
    "status": "success",
    "instruction_id": "i-1",
    "acknowledged_at": "2026-01-01T00:00:00Z",
    "agent_id": "a",
    "session_id": "s",
}

# (call, method, path, query, expected body, response body, check of the result)
Case = tuple[Callable[[Any], Any], str, str, dict[str, str], Any, Any, Callable[[Any], bool]]

CASES: list[Case] = [
    (lambda c: c.get_status(), "GET", "/status", {}, None, {"status": "ok"}, lambda r: r.status == "ok"),
    (lambda c: c.get_entity("gridsquare", "gs-1"), "GET", "/gridsquares/gs-1", {}, None, ENTITY, lambda r: r == ENTITY),
    (lambda c: c.create_acquisition_request(ACQ), "POST", "/acquisitions", {},
     {"uuid": "acq-1", "name": "session A", "status": "started"}, {"uuid": "acq-1"}, lambda r: r.uuid == "acq-1"),
    (lambda c: c.update_acquisition_request(ACQ), "PUT", "/acquisitions/acq-1", {},
     {"uuid": "acq-1", "name": "session A", "status": "started"}, {"uuid": "acq-1"}, lambda r: r.uuid == "acq-1"),
    (lambda c: c.create_grid_request(GRID), "POST", "/acquisitions/acq-1/grids", {},
     {"uuid": "grid-1", "name": "session A", "acquisition_uuid": "acq-1"}, {"uuid": "grid-1"}, lambda r: True),
    (lambda c: c.update_grid_request(GRID), "PUT", "/grids/grid-1", {},
     {"uuid": "grid-1", "name": "session A", "acquisition_uuid": "acq-1"}, {"uuid": "grid-1"}, lambda r: True),
    (lambda c: c.create_atlas_request(ATLAS), "POST", "/grids/grid-1/atlas", {},
     {"uuid": "atlas-1", "grid_uuid": "grid-1", "name": "Atlas",
      "tiles": [{"uuid": "tile-1", "atlas_uuid": "atlas-1", "tile_id": "7"}]},
     {"uuid": "atlas-1", "tiles": [{"uuid": "tile-1"}]}, lambda r: r.tiles[0].uuid == "tile-1"),
    (lambda c: c.link_tile_gridsquares_request("tile-1", [POS]), "POST", "/atlas-tiles/tile-1/gridsquares", {},
     [{"center_x": 10, "center_y": 20, "size_width": 5, "size_height": 6, "gridsquare_uuid": "gs-1"}],
     [{"atlastile_uuid": "tile-1", "gridsquare_uuid": "gs-1"}], lambda r: r[0].gridsquare_uuid == "gs-1"),
    (lambda c: c.create_gridsquare_request(GS), "POST", "/grids/grid-1/gridsquares", {},
     {"uuid": "gs-1", "gridsquare_id": "1234", "grid_uuid": "grid-1", "defocus": -2e-6, "lowmag": False},
     {"uuid": "gs-1"}, lambda r: r.uuid == "gs-1"),
    (lambda c: c.create_gridsquares_batch_request("grid-1", [GS]), "POST", "/grids/grid-1/gridsquares/batch", {},
     {"gridsquares": [{"uuid": "gs-1", "gridsquare_id": "1234", "grid_uuid": "grid-1", "defocus": -2e-6,
                       "lowmag": False}]},
     {"gridsquares": [{"uuid": "gs-1"}]}, lambda r: [g.uuid for g in r] == ["gs-1"]),
    (lambda c: c.update_gridsquare_request(GS), "PUT", "/gridsquares/gs-1", {},
     {"uuid": "gs-1", "gridsquare_id": "1234", "grid_uuid": "grid-1", "defocus": -2e-6, "lowmag": False},
     {"uuid": "gs-1"}, lambda r: True),
    (lambda c: c.create_foilholes_request("gs-1", [FH]), "POST", "/gridsquares/gs-1/foilholes", {},
     [{"uuid": "fh-1", "foilhole_id": "55", "gridsquare_id": "1234", "gridsquare_uuid": "gs-1",
       "is_near_grid_bar": False}], [{"uuid": "fh-1"}], lambda r: r[0].uuid == "fh-1"),
    (lambda c: c.update_foilhole_request(FH), "PUT", "/foilholes/fh-1", {},
     {"uuid": "fh-1", "foilhole_id": "55", "gridsquare_id": "1234", "gridsquare_uuid": "gs-1",
      "is_near_grid_bar": False}, {"uuid": "fh-1"}, lambda r: True),
    (lambda c: c.create_micrograph_request(MIC), "POST", "/foilholes/fh-1/micrographs", {},
     {"uuid": "mic/1", "foilhole_id": "55", "foilhole_uuid": "fh-1", "status": "none"},
     {"uuid": "mic/1"}, lambda r: r.uuid == "mic/1"),
    (lambda c: c.create_micrographs_batch_request([MIC]), "POST", "/foilholes/micrographs/batch", {},
     {"micrographs": [{"uuid": "mic/1", "foilhole_id": "55", "foilhole_uuid": "fh-1", "status": "none"}]},
     {"micrographs": [{"uuid": "mic/1"}]}, lambda r: r[0].uuid == "mic/1"),
    # the uuid is percent-encoded in the path: ids are opaque strings
    (lambda c: c.update_micrograph_request(MIC), "PUT", "/micrographs/mic%2F1", {},
     {"uuid": "mic/1", "foilhole_id": "55", "foilhole_uuid": "fh-1", "status": "none"}, {"uuid": "mic/1"},
     lambda r: True),
    (lambda c: c.mark_grid_registered("grid-1"), "POST", "/grids/grid-1/registered", {}, None, True, lambda r: r is True),
    (lambda c: c.mark_gridsquare_registered("gs-1", 12), "POST", "/gridsquares/gs-1/registered", {"count": "12"},
     None, True, lambda r: r is True),
    (lambda c: c.send_heartbeat("a", "s"), "POST", "/agent/a/session/s/heartbeat", {}, None,
     {"status": "success", "connection_id": "c"}, lambda r: r.connection_id == "c"),
    (lambda c: c.acknowledge_instruction("a", "s", "i-1", ACK), "POST", "/agent/a/session/s/instructions/i-1/ack",
     {}, {"status": "processed", "result": "ok"}, ACK_RESPONSE, lambda r: r.status == "success"),
    (lambda c: c.create_session(SessionCreateRequest(agent_id="a", name="n")), "POST", "/debug/sessions/create",
     {}, {"agent_id": "a", "name": "n"}, {"session_id": "s"}, lambda r: r.session_id == "s"),
    (lambda c: c.create_instruction("s", InstructionCreateRequest(instruction_type="t", payload={})), "POST",
     "/debug/session/s/create-instruction", {},
     {"instruction_type": "t", "payload": {}, "priority": "normal", "expires_in_minutes": 60},
     {"instruction_id": "i"}, lambda r: r.instruction_id == "i"),
    (lambda c: c.get_acquisition_grids("acq-1"), "GET", "/acquisitions/acq-1/grids", {}, None, [{"uuid": "g"}],
     lambda r: r[0].uuid == "g"),
    (lambda c: c.get_atlas_tiles_by_atlas("atlas-1"), "GET", "/atlases/atlas-1/tiles", {}, None, [{"uuid": "t"}],
     lambda r: r[0].uuid == "t"),
    (lambda c: c.get_grid_gridsquares("grid-1"), "GET", "/grids/grid-1/gridsquares", {}, None, [{"uuid": "g"}],
     lambda r: len(r) == 1),
    (lambda c: c.get_gridsquare_foilholes("gs-1"), "GET", "/gridsquares/gs-1/foilholes", {}, None,
     [{"uuid": "f"}], lambda r: len(r) == 1),
    (lambda c: c.get_foilhole_micrographs("fh-1"), "GET", "/foilholes/fh-1/micrographs", {}, None,
     [{"uuid": "m"}], lambda r: len(r) == 1),
]  # fmt: skip

# SmartEM's own methods taking domain models (converted with converters.EntityConverter)
ACQ_DATA = AcquisitionData(session_id="epu-1", name="session A", uuid="acq-1")
GRID_DATA = GridData(session_id="epu-1", name="session A", uuid="grid-1", acquisition_uuid="acq-1")
ATLAS_DATA = AtlasData(atlas_id="9", name="Atlas", uuid="atlas-1", grid_uuid="grid-1")
TILE_DATA = AtlasTileData(tile_id="7", atlas_id="9", uuid="tile-1", atlas_uuid="atlas-1")
POS_DATA = AtlasTileGridSquarePositionData(
    tile_id="7", gridsquare_id="1234", atlas_id="9", center_x_px=10.4, center_y_px=20.0, size_width_px=5.0,
    size_height_px=6.0, tile_uuid="tile-1", gridsquare_uuid="gs-1",
)  # fmt: skip
GS_DATA = GridSquareData(gridsquare_id="1234", uuid="gs-1", grid_uuid="grid-1")
FH_DATA = FoilHoleData(foilhole_id="55", gridsquare_id="1234", uuid="fh-1", gridsquare_uuid="gs-1")
FH_BAR = FoilHoleData(
    foilhole_id="56", gridsquare_id="1234", uuid="fh-2", gridsquare_uuid="gs-1", is_near_grid_bar=True
)
MIC_DATA = MicrographData(micrograph_id="m1", foilhole_id="55", uuid="mic-1", foilhole_uuid="fh-1")

SEED_CASES: list[tuple[Callable[[Any], Any], str, str, Callable[[Any], bool]]] = [
    (lambda c: c.create_acquisition(ACQ_DATA), "POST", "/acquisitions", lambda b: b["uuid"] == "acq-1"),
    (lambda c: c.update_acquisition(ACQ_DATA), "PUT", "/acquisitions/acq-1", lambda b: b["name"] == "session A"),
    (lambda c: c.create_acquisition_grid(GRID_DATA), "POST", "/acquisitions/acq-1/grids",
     lambda b: b["acquisition_uuid"] == "acq-1"),
    (lambda c: c.update_grid(GRID_DATA), "PUT", "/grids/grid-1", lambda b: b["uuid"] == "grid-1"),
    (lambda c: c.create_grid_atlas(ATLAS_DATA), "POST", "/grids/grid-1/atlas", lambda b: b["uuid"] == "atlas-1"),
    (lambda c: c.create_atlas_tile_for_atlas(TILE_DATA), "POST", "/atlases/atlas-1/tiles",
     lambda b: b["tile_id"] == "7"),
    (lambda c: c.link_atlas_tile_and_gridsquare(POS_DATA), "POST", "/atlas-tiles/tile-1/gridsquares/gs-1",
     lambda b: b["center_x"] == 10),
    (lambda c: c.link_atlas_tile_and_gridsquares([POS_DATA]), "POST", "/atlas-tiles/tile-1/gridsquares",
     lambda b: b[0]["gridsquare_uuid"] == "gs-1"),
    (lambda c: c.create_grid_gridsquare(GS_DATA, lowmag=True), "POST", "/grids/grid-1/gridsquares",
     lambda b: b["lowmag"] is True),
    (lambda c: c.update_gridsquare(GS_DATA), "PUT", "/gridsquares/gs-1", lambda b: b["gridsquare_id"] == "1234"),
    (lambda c: c.create_gridsquare_foilholes("gs-1", [FH_DATA, FH_BAR]), "POST", "/gridsquares/gs-1/foilholes",
     lambda b: [h["uuid"] for h in b] == ["fh-1"]),
    (lambda c: c.update_foilhole(FH_DATA), "PUT", "/foilholes/fh-1", lambda b: b["foilhole_id"] == "55"),
    (lambda c: c.create_foilhole_micrograph(MIC_DATA), "POST", "/foilholes/fh-1/micrographs",
     lambda b: b["uuid"] == "mic-1"),
    (lambda c: c.update_micrograph(MIC_DATA), "PUT", "/micrographs/mic-1", lambda b: b["foilhole_uuid"] == "fh-1"),
]  # fmt: skip


def _mock(
    method: str, path: str, query: dict[str, str], response: Any, seen: list[Any]
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == method
        assert request.url.raw_path.split(b"?")[0].decode() == path
        assert dict(request.url.params) == query
        seen.append(json.loads(request.content) if request.content else None)
        status = 201 if method == "POST" and not path.endswith(("registered", "heartbeat", "ack")) else 200
        return httpx.Response(status, json=response)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("call", "method", "path", "query", "body", "response", "check"), CASES)
def test_sync_method(
    call: Any, method: str, path: str, query: Any, body: Any, response: Any, check: Any
) -> None:
    seen: list[Any] = []
    with SmartEMAPIClient("http://backend", transport=_mock(method, path, query, response, seen)) as client:
        assert check(call(client))
    assert seen == [body]


@pytest.mark.parametrize(("call", "method", "path", "query", "body", "response", "check"), CASES)
async def test_async_method(
    call: Any, method: str, path: str, query: Any, body: Any, response: Any, check: Any
) -> None:
    seen: list[Any] = []
    async with AsyncSmartEMAPIClient(
        "http://backend", transport=_mock(method, path, query, response, seen)
    ) as c:
        assert check(await call(c))
    assert seen == [body]


@pytest.mark.parametrize(("call", "method", "path", "check_body"), SEED_CASES)
def test_seed_methods_convert_domain_models(call: Any, method: str, path: str, check_body: Any) -> None:
    seen: list[Any] = []
    response: Any = {"uuid": "x", "tiles": []}
    if path.endswith(("foilholes", "/gridsquares")) and "grids/" not in path:
        response = [{"uuid": "x"}]
    with SmartEMAPIClient("http://backend", transport=_mock(method, path, {}, response, seen)) as client:
        call(client)
    assert check_body(seen[0])


@pytest.mark.parametrize(("call", "method", "path", "check_body"), SEED_CASES)
async def test_async_seed_methods_convert_domain_models(
    call: Any, method: str, path: str, check_body: Any
) -> None:
    seen: list[Any] = []
    response: Any = {"uuid": "x", "tiles": []}
    if path.endswith(("foilholes", "/gridsquares")) and "grids/" not in path:
        response = [{"uuid": "x"}]
    async with AsyncSmartEMAPIClient(
        "http://backend", transport=_mock(method, path, {}, response, seen)
    ) as c:
        await call(c)
    assert check_body(seen[0])


def test_foilholes_all_near_grid_bar_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with SmartEMAPIClient("http://b", transport=httpx.MockTransport(handler)) as client:
        assert client.create_gridsquare_foilholes("gs-1", [FH_BAR]) == []
        assert len(client.create_gridsquare_foilholes.__doc__ or "") > 0


def test_ship_logs_splits_into_batches_of_500() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        logs = json.loads(request.content)["logs"]
        sizes.append(len(logs))
        assert set(logs[0]) == {"timestamp", "level", "logger_name", "message"}
        return httpx.Response(200, json={"stored": len(logs)})

    records = [AgentLogEntry(timestamp=datetime.now(UTC), level="INFO", logger_name="x", message=str(i))
               for i in range(1201)]  # fmt: skip
    with SmartEMAPIClient("http://b", transport=httpx.MockTransport(handler)) as client:
        assert client.ship_logs("a", "s", records) == 1201
    assert sizes == [500, 500, 201]


def test_micrograph_batch_absent_extension_is_not_found() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(405, json={"detail": "Method Not Allowed"})
    )
    with SmartEMAPIClient("http://b", transport=transport) as client, pytest.raises(NotFoundError):
        client.create_micrographs_batch_request([MIC])


def test_micrograph_without_parent_uuid_is_refused_before_sending() -> None:
    client = SmartEMAPIClient("http://b", transport=httpx.MockTransport(lambda r: httpx.Response(201)))
    with client, pytest.raises(ValueError, match="foilhole_uuid"):
        client.create_micrograph_request(MicrographCreateRequest(uuid="m", foilhole_id="1"))


def test_response_of_wrong_shape_is_invalid_response() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(201, json={"no_uuid": True}))
    with SmartEMAPIClient("http://b", transport=transport) as client, pytest.raises(InvalidResponseError):
        client.create_acquisition_request(ACQ)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with SmartEMAPIClient("http://b", transport=transport) as client, pytest.raises(InvalidResponseError):
        client.get_status()


def test_duplicate_create_500_then_closed_connection_is_resent_once_and_entity_can_be_fetched() -> None:
    """SmartEM's duplicate create: 500 text/plain, then the keep-alive connection is dead for the next request."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(500, text="Internal Server Error", headers={"content-type": "text/plain"})
        if len(calls) == 2:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(200, json={"uuid": "acq-1", "name": "session A"})

    with SmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(handler), retry=RetryPolicy.instant()
    ) as client:
        with pytest.raises(ServerError) as info:
            client.create_acquisition_request(ACQ)
        error = info.value
        assert (error.status_code, error.entity_kind, error.entity_uuid) == (500, "acquisition", "acq-1")
        assert error.detail == "Internal Server Error"
        assert client.get_entity(error.entity_kind or "", error.entity_uuid or "")["uuid"] == "acq-1"
    # the POST is not retried (500), the GET is resent once on a fresh connection
    assert calls == ["POST /acquisitions", "GET /acquisitions/acq-1", "GET /acquisitions/acq-1"]


def test_unknown_entity_kind_is_a_value_error() -> None:
    client = SmartEMAPIClient("http://b", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with client, pytest.raises(ValueError, match="unknown entity kind"):
        client.get_entity("banana", "x")


def test_timeouts_are_always_applied_connect_and_read_separately() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"status": "ok"})

    with SmartEMAPIClient("http://b", timeout=12.0, transport=httpx.MockTransport(handler)) as client:
        client.get_status()
    with SmartEMAPIClient(
        "http://b", 12.0, None, connect_timeout=2.0, transport=httpx.MockTransport(handler)
    ) as c:
        c.get_status()
    assert seen[0] == {"connect": 5.0, "read": 12.0, "write": 12.0, "pool": 12.0}
    assert seen[1]["connect"] == 2.0
    with pytest.raises(ValueError, match="timeout"):
        SmartEMAPIClient("http://b", timeout=0)
    with pytest.raises(ValueError, match="base_url"):
        SmartEMAPIClient("backend:8000")
