"""Entity endpoints over real HTTP: shapes, reads, updates and the strict/smartem differences."""

from __future__ import annotations

import httpx

from testbed.backend import BackendServer

from .conftest import make_tree


def test_status_and_health(any_server: BackendServer, client: httpx.Client) -> None:
    status = client.get("/status").json()
    assert status["status"] == "ok"
    assert status["configuration"]["compat"] == any_server.options.compat
    assert client.get("/health").json() == {"status": "ok"}


def test_full_tree_round_trip(any_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    assert client.get(f"/acquisitions/{ids['acq']}").json()["name"] == "Session 1"
    assert [a["uuid"] for a in client.get("/acquisitions").json()] == [ids["acq"]]
    grids = client.get(f"/acquisitions/{ids['acq']}/grids").json()
    assert [g["uuid"] for g in grids] == [ids["grid"]]
    strict = any_server.options.compat == "strict"
    atlas = client.get(f"/atlases/{ids['atlas']}").json()
    assert atlas["grid_uuid"] == ids["grid"]
    # SmartEM's atlas answers never carry the tiles (read them from /atlases/{uuid}/tiles)
    assert [t["uuid"] for t in atlas["tiles"]] == ([ids["tile1"], ids["tile2"]] if strict else [])
    assert client.get(f"/grids/{ids['grid']}/atlas").json()["uuid"] == ids["atlas"]
    tiles = client.get(f"/atlases/{ids['atlas']}/tiles").json()
    assert {t["tile_id"] for t in tiles} == {"1", "2"}
    assert client.get(f"/atlas-tiles/{ids['tile2']}").json()["position_x"] == 4096
    squares = client.get(f"/grids/{ids['grid']}/gridsquares").json()
    assert [s["uuid"] for s in squares] == [ids["gs1"], ids["gs2"]]
    assert "lowmag" not in squares[0]  # SmartEM's GridSquareResponse has no lowmag
    holes = client.get(f"/gridsquares/{ids['gs1']}/foilholes").json()
    assert [h["foilhole_id"] for h in holes] == ["5001", "5002"]
    assert "gridsquare_uuid" not in holes[0]  # nor does FoilHoleResponse carry gridsquare_uuid
    mics = client.get(f"/foilholes/{ids['fh1']}/micrographs").json()
    assert mics[0]["defocus"] == -1.5e-6
    assert mics[0]["micrograph_id"] == (None if strict else "")  # SmartEM reads back its column default
    assert mics[0]["status"] == "none"

    linked = client.post(
        f"/atlas-tiles/{ids['tile1']}/gridsquares",
        json=[
            {"gridsquare_uuid": ids["gs1"], "center_x": 1, "center_y": 2, "size_width": 3, "size_height": 4},
            {"gridsquare_uuid": ids["gs2"], "center_x": 5, "center_y": 6, "size_width": 7, "size_height": 8},
        ],
    )
    assert linked.status_code == 201
    assert linked.json()[1] == {
        "atlastile_uuid": ids["tile1"],
        "gridsquare_uuid": ids["gs2"],
        "center_x": 5,
        "center_y": 6,
        "size_width": 7,
        "size_height": 8,
    }
    assert len(client.get(f"/atlas-tiles/{ids['tile1']}/gridsquares").json()) == 2

    assert client.post(f"/grids/{ids['grid']}/registered").json() is True
    assert client.post(f"/gridsquares/{ids['gs1']}/registered", params={"count": 2}).json() is True

    counts = client.get("/testbed/counts").json()
    assert counts == {
        "acquisition": 1,
        "grid": 1,
        "atlas": 1,
        "atlas_tile": 2,
        "gridsquare": 2,
        "foilhole": 2,
        "micrograph": 1,
        "atlas_tile_position": 2,
    }
    assert client.get("/testbed/counts", params={"acquisition_uuid": "other"}).json()["grid"] == 0
    tree = client.get(f"/testbed/acquisitions/{ids['acq']}/entities").json()
    assert [e["uuid"] for e in tree["entities"]["foilhole"]] == [ids["fh1"], ids["fh2"]]
    assert tree["entities"]["micrograph"][0]["acquisition_uuid"] == ids["acq"]
    assert tree["entities"]["micrograph"][0]["parent_uuid"] == ids["fh1"]
    assert len(tree["tile_positions"]) == 2
    gs1 = client.get(f"/testbed/entities/gridsquare/{ids['gs1']}").json()
    assert gs1["registered"] is True
    assert gs1["registered_count"] == 2
    assert gs1["data"]["lowmag"] is False  # the full request is kept for comparisons


def test_updates_merge_sent_fields_and_keep_parent(any_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    response = client.put(
        f"/gridsquares/{ids['gs1']}",
        json={"uuid": ids["gs1"], "gridsquare_id": "1001", "grid_uuid": ids["grid"], "defocus": -2e-6},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["uuid"] == ids["gs1"]
    assert body["grid_uuid"] == ids["grid"]
    assert body["defocus"] == -2e-6
    assert body["center_x"] == 10  # not sent, kept
    stored = client.get(f"/testbed/entities/gridsquare/{ids['gs1']}").json()
    assert stored["update_count"] == 1
    for path, body_ in [
        (f"/acquisitions/{ids['acq']}", {"uuid": ids["acq"], "name": "Renamed"}),
        (f"/grids/{ids['grid']}", {"uuid": ids["grid"], "name": "G", "acquisition_uuid": ids["acq"]}),
        (
            f"/foilholes/{ids['fh1']}",
            {
                "uuid": ids["fh1"],
                "foilhole_id": "5001",
                "gridsquare_id": "1001",
                "gridsquare_uuid": ids["gs1"],
            },
        ),
        (
            f"/micrographs/{ids['mic1']}",
            {"uuid": ids["mic1"], "foilhole_id": "5001", "status": "ctf completed"},
        ),
    ]:
        assert client.put(path, json=body_).status_code == 200, path
    assert client.get(f"/acquisitions/{ids['acq']}").json()["name"] == "Renamed"
    assert client.get(f"/micrographs/{ids['mic1']}").json()["foilhole_uuid"] == ids["fh1"]
    missing = client.put("/micrographs/nope", json={"uuid": "nope", "foilhole_id": "1"})
    assert missing.status_code == 404


def test_strict_put_must_not_contradict_the_row(strict_server: BackendServer, client: httpx.Client) -> None:
    # SmartEM applies a PUT body's uuid and parent (renaming or moving the row): strict refuses a contradiction.
    ids = make_tree(client)
    square = {"uuid": ids["gs1"], "gridsquare_id": "1001", "grid_uuid": ids["grid"]}
    renamed = client.put(f"/gridsquares/{ids['gs1']}", json={**square, "uuid": "other"})
    assert renamed.status_code == 422
    assert renamed.json()["detail"][0]["loc"] == ["body", "uuid"]
    moved = client.put(f"/gridsquares/{ids['gs1']}", json={**square, "grid_uuid": "elsewhere"})
    assert moved.status_code == 422
    assert moved.json()["detail"][0]["loc"] == ["body", "grid_uuid"]
    partial = client.put(f"/gridsquares/{ids['gs1']}", json={"defocus": -1e-6})
    assert partial.status_code == 422  # strict keeps the create shape
    assert client.get(f"/testbed/entities/gridsquare/{ids['gs1']}").json()["update_count"] == 0


def test_smartem_put_is_partial_and_fails_like_smartem(
    smartem_server: BackendServer, client: httpx.Client
) -> None:
    ids = make_tree(client)
    partial = client.put(f"/gridsquares/{ids['gs1']}", json={"defocus": -1e-6})
    assert partial.status_code == 200
    assert partial.json()["gridsquare_id"] == "1001"  # kept
    # SmartEM would rename the row; the testbed answers as it does and keeps the row where it is
    assert client.put(f"/gridsquares/{ids['gs1']}", json={"uuid": "other"}).status_code == 200
    assert client.get(f"/gridsquares/{ids['gs1']}").status_code == 200
    for body in ({"grid_uuid": "elsewhere"}, {"gridsquare_id": None}):
        failed = client.put(f"/gridsquares/{ids['gs1']}", json=body)
        assert (failed.status_code, failed.text) == (500, "Internal Server Error"), body
    assert client.put(f"/acquisitions/{ids['acq']}", json={"name": None}).status_code == 500


def test_strict_unknown_parent_and_entity_are_404(strict_server: BackendServer, client: httpx.Client) -> None:
    assert (
        client.post(
            "/acquisitions/nope/grids", json={"uuid": "g", "name": "g", "acquisition_uuid": "nope"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/grids/nope/gridsquares", json={"uuid": "s", "gridsquare_id": "1", "grid_uuid": "nope"}
        ).status_code
        == 404
    )
    assert (
        client.post("/foilholes/nope/micrographs", json={"uuid": "m", "foilhole_id": "1"}).status_code == 404
    )
    assert client.post("/gridsquares/nope/foilholes", json=[]).status_code == 404
    assert client.get("/grids/nope").status_code == 404
    assert client.get("/gridsquares/nope/foilholes").status_code == 404
    assert client.post("/grids/nope/registered").status_code == 404
    assert client.get("/testbed/counts").json()["grid"] == 0


def test_smartem_unknown_parent_is_the_foreign_key_500(
    smartem_server: BackendServer, client: httpx.Client
) -> None:
    # SmartEM inserts without looking the parent up: the foreign key refuses the row, an unhandled error.
    for path, body in (
        ("/acquisitions/nope/grids", {"uuid": "g", "name": "g", "acquisition_uuid": "nope"}),
        ("/grids/nope/gridsquares", {"uuid": "s", "gridsquare_id": "1", "grid_uuid": "nope"}),
        ("/foilholes/nope/micrographs", {"uuid": "m", "foilhole_id": "1"}),
        ("/grids/nope/atlas", {"uuid": "a", "grid_uuid": "nope", "name": "A"}),
    ):
        response = client.post(path, json=body)
        assert (response.status_code, response.text) == (500, "Internal Server Error"), path
    assert client.post("/gridsquares/nope/foilholes", json=[]).json() == []  # nothing to insert: 201
    assert client.post("/grids/nope/registered").json() is True  # only publishes an event
    assert client.get("/grids/nope").status_code == 404
    assert client.get("/testbed/counts").json()["grid"] == 0


def test_strict_rejects_unknown_fields_and_wrong_types(
    strict_server: BackendServer, client: httpx.Client
) -> None:
    extra = client.post("/acquisitions", json={"uuid": "a", "name": "n", "colour": "red"})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"
    nested = client.post("/acquisitions", json={"uuid": "a", "name": "n"})
    assert nested.status_code == 201
    client.post("/acquisitions/a/grids", json={"uuid": "g", "name": "g", "acquisition_uuid": "a"})
    bad_tile = client.post(
        "/grids/g/atlas",
        json={
            "uuid": "at",
            "grid_uuid": "g",
            "name": "A",
            "tiles": [{"uuid": "t", "atlas_uuid": "at", "x": 1}],
        },
    )
    assert bad_tile.status_code == 422
    wrong_type = client.post(
        "/grids/g/gridsquares", json={"uuid": "s", "gridsquare_id": 1001, "grid_uuid": "g"}
    )
    assert wrong_type.status_code == 422  # an int where SmartEM expects a string
    string_number = client.post(
        "/grids/g/gridsquares", json={"uuid": "s", "gridsquare_id": "1", "grid_uuid": "g", "center_x": "10"}
    )
    assert string_number.status_code == 422
    assert client.post("/acquisitions", content=b"{not json").status_code == 422
    assert client.get("/testbed/counts").json()["gridsquare"] == 0


def test_strict_duplicates_are_409_and_atomic(strict_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    dup = client.post("/acquisitions", json={"uuid": ids["acq"], "name": "other"})
    assert dup.status_code == 409
    assert client.get(f"/acquisitions/{ids['acq']}").json()["name"] == "Session 1"
    # a batch with one existing hole stores nothing
    holes = client.post(
        f"/gridsquares/{ids['gs1']}/foilholes",
        json=[
            {
                "uuid": "new-hole",
                "foilhole_id": "6001",
                "gridsquare_id": "1001",
                "gridsquare_uuid": ids["gs1"],
            },
            {
                "uuid": ids["fh1"],
                "foilhole_id": "5001",
                "gridsquare_id": "1001",
                "gridsquare_uuid": ids["gs1"],
            },
        ],
    )
    assert holes.status_code == 409
    assert client.get("/foilholes/new-hole").status_code == 404
    # tile links are an upsert: a re-send after a restart is harmless
    pos = {"gridsquare_uuid": ids["gs1"], "center_x": 1, "center_y": 1, "size_width": 1, "size_height": 1}
    assert client.post(f"/atlas-tiles/{ids['tile1']}/gridsquares", json=[pos]).status_code == 201
    moved = {**pos, "center_x": 9}
    assert client.post(f"/atlas-tiles/{ids['tile1']}/gridsquares", json=[moved]).status_code == 201
    assert client.get(f"/atlas-tiles/{ids['tile1']}/gridsquares").json()[0]["center_x"] == 9
    unknown_square = {**pos, "gridsquare_uuid": "nope"}
    assert client.post(f"/atlas-tiles/{ids['tile1']}/gridsquares", json=[unknown_square]).status_code == 404


def test_gridsquare_batch_rules(any_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    url = f"/grids/{ids['grid']}/gridsquares/batch"

    def square(uuid: str, grid: str = ids["grid"]) -> dict[str, str]:
        return {"uuid": uuid, "gridsquare_id": uuid, "grid_uuid": grid}

    assert client.post(url, json={"gridsquares": []}).status_code == 422
    assert client.post(url, json={"gridsquares": [square("x"), square("x")]}).status_code == 422
    assert client.post(url, json={"gridsquares": [square(f"s{i}") for i in range(1001)]}).status_code == 422
    # SmartEM itself answers 409 here (it handles the integrity error), so both modes do
    assert client.post(url, json={"gridsquares": [square("y"), square(ids["gs1"])]}).status_code == 409
    assert (
        client.post(
            "/grids/nope/gridsquares/batch", json={"gridsquares": [square("z", grid="nope")]}
        ).status_code
        == 404
    )
    created = client.post(url, json={"gridsquares": [square(f"b{i}") for i in range(1000)]})
    assert created.status_code == 201
    assert len(created.json()["gridsquares"]) == 1000
    assert created.json()["gridsquares"][0]["grid_uuid"] == ids["grid"]
    # SmartEM files batch squares under the grid their body names: an unknown one is its integrity error
    # (409); strict refuses the contradiction with the path
    contradiction = client.post(url, json={"gridsquares": [square("c", grid="elsewhere")]})
    assert contradiction.status_code == (422 if any_server.options.compat == "strict" else 409)


def test_foilholes_follow_the_body_parent_on_smartem(any_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    hole = {"uuid": "h9", "foilhole_id": "9", "gridsquare_id": "1002", "gridsquare_uuid": ids["gs2"]}
    response = client.post(f"/gridsquares/{ids['gs1']}/foilholes", json=[hole])
    if any_server.options.compat == "strict":
        assert response.status_code == 422  # a body that contradicts the path
        return
    assert response.status_code == 201
    assert response.json()[0]["status"] == "none"  # answered "none", stored as sent (null)
    assert [h["uuid"] for h in client.get(f"/gridsquares/{ids['gs2']}/foilholes").json()] == ["h9"]
    unknown = {**hole, "uuid": "h10", "gridsquare_uuid": "nope"}
    assert client.post(f"/gridsquares/{ids['gs1']}/foilholes", json=[unknown]).status_code == 500


def test_micrograph_batch_extension(strict_server: BackendServer, client: httpx.Client) -> None:
    ids = make_tree(client)
    batch = {
        "micrographs": [
            {"uuid": f"m{i}", "foilhole_id": "5002", "foilhole_uuid": ids["fh2"], "image_size_x": 4096}
            for i in range(3)
        ]
    }
    response = client.post("/foilholes/micrographs/batch", json=batch)
    assert response.status_code == 201
    assert [m["uuid"] for m in response.json()["micrographs"]] == ["m0", "m1", "m2"]
    assert len(client.get(f"/foilholes/{ids['fh2']}/micrographs").json()) == 3
    assert client.post("/foilholes/micrographs/batch", json=batch).status_code == 409
    no_parent = {"micrographs": [{"uuid": "q", "foilhole_id": "1"}]}
    assert client.post("/foilholes/micrographs/batch", json=no_parent).status_code == 422
    unknown_parent = {"micrographs": [{"uuid": "q", "foilhole_id": "1", "foilhole_uuid": "nope"}]}
    assert client.post("/foilholes/micrographs/batch", json=unknown_parent).status_code == 404


def test_smartem_has_no_micrograph_batch(smartem_server: BackendServer, client: httpx.Client) -> None:
    body = {"micrographs": [{"uuid": "q", "foilhole_id": "1", "foilhole_uuid": "f"}]}
    assert client.post("/foilholes/micrographs/batch", json=body).status_code == 404


def test_smartem_ignores_unknown_fields(smartem_server: BackendServer, client: httpx.Client) -> None:
    response = client.post("/acquisitions", json={"uuid": "a", "name": "n", "colour": "red"})
    assert response.status_code == 201
    client.post(
        "/acquisitions/a/grids", json={"uuid": "g", "name": "g", "acquisition_uuid": "a", "lowmag": True}
    )
    atlas = client.post(
        "/grids/g/atlas",
        json={
            "uuid": "at",
            "grid_uuid": "g",
            "name": "A",
            "tiles": [{"uuid": "t", "atlas_uuid": "at", "x": 1}],
        },
    )
    assert atlas.status_code == 201
    stored = client.get("/testbed/entities/acquisition/a").json()
    assert "colour" not in stored["data"]


def test_smartem_duplicate_is_plain_500_and_closes_connection(
    smartem_server: BackendServer, client: httpx.Client
) -> None:
    assert client.post("/acquisitions", json={"uuid": "a", "name": "first"}).status_code == 201
    dup = client.post("/acquisitions", json={"uuid": "a", "name": "second"})
    assert dup.status_code == 500
    assert dup.headers["content-type"].startswith("text/plain")
    assert dup.text == "Internal Server Error"
    assert dup.headers["connection"] == "close"
    # the original row is unchanged, and a fresh connection works
    assert client.get("/acquisitions/a").json()["name"] == "first"
    client.post("/acquisitions/a/grids", json={"uuid": "g", "name": "g", "acquisition_uuid": "a"})
    again = client.post("/acquisitions/a/grids", json={"uuid": "g", "name": "g", "acquisition_uuid": "a"})
    assert again.status_code == 500
    client.post("/grids/g/gridsquares", json={"uuid": "s", "gridsquare_id": "1", "grid_uuid": "g"})
    hole = {"uuid": "h", "foilhole_id": "1", "gridsquare_id": "1", "gridsquare_uuid": "s"}
    assert client.post("/gridsquares/s/foilholes", json=[hole]).status_code == 201
    assert client.post("/gridsquares/s/foilholes", json=[hole]).status_code == 500


def test_smartem_nameless_acquisition_commits_then_500(
    smartem_server: BackendServer, client: httpx.Client
) -> None:
    response = client.post("/acquisitions", json={"uuid": "a"})
    assert response.status_code == 500
    assert client.get("/acquisitions/a").json()["name"] == "Unknown"
    assert client.post("/acquisitions", json={"uuid": "a", "name": "retry"}).status_code == 500


def test_status_values_must_be_in_smartems_vocabulary(
    any_server: BackendServer, client: httpx.Client
) -> None:
    # SmartEM's request models type status as its enums: a name instead of a value is a 422 there too.
    for status in ("Started", "STARTED", "running"):
        refused = client.post("/acquisitions", json={"uuid": "a", "name": "n", "status": status})
        assert refused.status_code == 422, status
        assert refused.json()["detail"][0]["loc"] == ["body", "status"]
    holes = [
        {"uuid": "h", "foilhole_id": "1", "gridsquare_id": "1", "gridsquare_uuid": "s", "status": "busy"}
    ]
    refused = client.post("/gridsquares/s/foilholes", json=holes)
    assert refused.json()["detail"][0]["loc"] == ["body", 0, "status"]
    assert (
        client.post("/acquisitions", json={"uuid": "a", "name": "n", "status": "planned"}).status_code == 201
    )
    # SmartEM starts every acquisition it creates, whatever status was sent
    expected = "planned" if any_server.options.compat == "strict" else "started"
    assert client.get("/acquisitions/a").json()["status"] == expected


def test_datetimes_with_offset_are_refused(
    strict_server: BackendServer, smartem_server: BackendServer
) -> None:
    # As on SmartEM (timestamp-without-time-zone columns): strict names the field (422), smartem crashes like
    # the real backend (500 text/plain) and stores nothing; the same value without offset is accepted.
    uuid = "7d9b1f52-2f0e-4a8e-9f55-0c3e4c6f7a01"
    for server, expected in ((strict_server, 422), (smartem_server, 500)):
        with httpx.Client(base_url=server.url, verify=False) as client:
            for value in ("2023-09-19T14:01:41Z", "2023-09-19T14:01:41+02:00"):
                response = client.post("/acquisitions", json={"uuid": uuid, "name": "s", "start_time": value})
                assert response.status_code == expected, response.text
                if expected == 422:
                    assert response.json()["detail"][0]["loc"] == ["body", "start_time"]
                else:
                    assert response.text == "Internal Server Error"
            assert client.get(f"/acquisitions/{uuid}").status_code == 404
            created = client.post(
                "/acquisitions", json={"uuid": uuid, "name": "s", "start_time": "2023-09-19T12:01:41"}
            )
            assert created.status_code in (200, 201)
            assert client.get(f"/acquisitions/{uuid}").json()["start_time"].startswith("2023-09-19T12:01:41")
