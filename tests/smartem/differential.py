"""The differential corpus: one sequence of requests sent unchanged to the testbed and to the real SmartEM backend.

Every endpoint the agent uses is here (acquisitions, grids, atlas with tiles, tile positions, grid squares single
and batch, foil holes, micrographs and the micrograph batch the agent tries first, agent sessions, the SSE stream,
heartbeats, acknowledgements, log shipping), each with valid requests and the invalid ones a client can produce:
datetimes with a UTC offset, duplicate uuids, unknown parents, wrong types, missing required fields, unknown
status values, unknown extra fields, repeated acknowledgements. The corpus runs in order against an empty backend,
so its first valid steps build the tree that later steps refer to; invalid probes use uuids of their own, so a
probe one backend accepts and another refuses does not change what a later step sees (one step depends on its
predecessor on purpose: the named retry of a nameless acquisition).

:func:`run_corpus` returns one :class:`Outcome` per step (status code, content type, for stream steps the SSE
event names); ``tests/smartem/test_differential.py`` compares them between backends. Server-generated ids
(instruction ids) are captured from responses and substituted into later paths (``{i1}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

__all__ = [
    "CORPUS",
    "AuthMode",
    "CloseStream",
    "Outcome",
    "Request",
    "Step",
    "Stream",
    "run_corpus",
    "status_class",
]

AuthMode = Literal["valid", "none", "garbage"]
"""How a step authenticates: the backend's own valid token, no ``Authorization`` header, or a token no backend
issued."""

# The agent and the other agent of the corpus's sessions.
AGENT = "diff-agent"
OTHER_AGENT = "diff-other-agent"
SESSION = "diff-session"
OTHER_SESSION = "diff-other-session"

# Datetimes as the wire carries them: naive UTC (what SmartEM stores), and the offset forms EPU writes.
NAIVE = "2025-02-26T10:01:48.123000"
AWARE_Z = "2025-02-26T10:01:48.123Z"
AWARE_OFFSET = "2025-02-26T11:01:48+01:00"


@dataclass(frozen=True)
class Request:
    """One HTTP request of the corpus.

    ``path`` may name values captured from earlier responses (see ``save``) as ``{name}``. ``body`` is sent as
    JSON unless ``raw`` is given (bytes sent as they are, for malformed bodies).
    """

    name: str
    method: str
    path: str
    covers: str
    body: Any = None
    raw: bytes | None = None
    params: Mapping[str, str] | None = None
    auth: AuthMode = "valid"
    save: Mapping[str, str] = field(default_factory=dict)
    """Captured values: context name -> key of the JSON response (e.g. ``{"i1": "instruction_id"}``)."""


@dataclass(frozen=True)
class Stream:
    """Open the SSE instruction stream and read until ``until`` events were seen (or the stream ended).

    The stream stays open (the backends need a live connection for acks and heartbeats) until a
    :class:`CloseStream` of the same ``name``, or the end of the corpus.
    """

    name: str
    agent_id: str
    session_id: str
    covers: str
    until: int = 1
    """How many named events (``connection``, ``instruction``, ``error``, ...) to wait for."""


@dataclass(frozen=True)
class CloseStream:
    """Close the stream opened by the :class:`Stream` step ``stream`` (not an outcome of its own)."""

    stream: str


Step = Request | Stream | CloseStream


@dataclass(frozen=True)
class Outcome:
    """What one backend answered to one step."""

    status: int
    content_type: str
    body: str
    """The response body (its first 20 000 characters), for messages and key comparisons."""
    events: tuple[str, ...] = ()
    """For :class:`Stream` steps: the SSE event names read, in order."""


def status_class(status: int) -> str:
    """``2xx``, ``4xx`` or ``5xx`` (the unit the differential check compares)."""
    return f"{status // 100}xx"


# -- the corpus ----------------------------------------------------------------------------------------------


def _acq(uuid: str, **extra: Any) -> dict[str, Any]:
    return {"uuid": uuid, "name": "Differential session", "status": "started", "start_time": NAIVE, **extra}


def _grid(uuid: str, acq: str = "d-acq", **extra: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": "Grid_1",
        "acquisition_uuid": acq,
        "status": "none",
        "data_dir": "/data/d",
        **extra,
    }


def _atlas(uuid: str, grid: str = "d-grid", tiles: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "grid_uuid": grid,
        "name": "Atlas",
        "atlas_id": "atlas-1",
        "acquisition_date": NAIVE,
        "tiles": [
            {"uuid": t, "atlas_uuid": uuid, "tile_id": str(n), "position_x": 4096 * n, "position_y": 0}
            for n, t in enumerate(tiles)
        ],
        **extra,
    }


def _square(uuid: str, natural: str, grid: str = "d-grid", **extra: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "gridsquare_id": natural,
        "grid_uuid": grid,
        "center_x": 1200,
        "center_y": 800,
        "size_width": 60,
        "size_height": 60,
        "acquisition_datetime": NAIVE,
        "defocus": -2.0e-6,
        "lowmag": True,
        **extra,
    }


def _position(square: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"center_x": 10, "center_y": 20, "size_width": 30, "size_height": 40, **extra}
    if square is not None:
        body["gridsquare_uuid"] = square
    return body


def _hole(
    uuid: str, natural: str, square: str = "d-gs1", square_id: str = "1001", **extra: Any
) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "foilhole_id": natural,
        "gridsquare_id": square_id,
        "gridsquare_uuid": square,
        "center_x": 100.5,
        "center_y": 200.25,
        "quality": 0.9,
        "x_location": 10,
        "y_location": 20,
        "diameter": 45,
        "is_near_grid_bar": False,
        **extra,
    }


def _mic(uuid: str, hole: str = "d-fh1", hole_id: str = "5001", **extra: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "foilhole_id": hole_id,
        "foilhole_uuid": hole,
        "location_id": "loc-1",
        "high_res_path": f"/data/d/{uuid}_fractions.tiff",
        "manifest_file": f"/data/d/{uuid}.xml",
        "acquisition_datetime": NAIVE,
        "defocus": -1.5e-6,
        "status": "none",
        **extra,
    }


def _ack_path(instruction: str, session: str = SESSION, agent: str = AGENT) -> str:
    return f"/agent/{agent}/session/{session}/instructions/{instruction}/ack"


def _log(**extra: Any) -> dict[str, Any]:
    return {"timestamp": NAIVE, "level": "INFO", "logger_name": "agent", "message": "hello", **extra}


def _entity_steps() -> list[Step]:
    acqs = "/acquisitions"
    grids = "/acquisitions/d-acq/grids"
    atlas = "/grids/d-grid/atlas"
    squares = "/grids/d-grid/gridsquares"
    batch = "/grids/d-grid/gridsquares/batch"
    holes = "/gridsquares/d-gs1/foilholes"
    mics = "/foilholes/d-fh1/micrographs"
    links = "/atlas-tiles/d-tile1/gridsquares"
    return [
        # -- unauthenticated and service routes
        Request("status", "GET", "/status", "auth-exempt status"),
        Request("health", "GET", "/health", "auth-exempt health"),
        Request("auth.missing", "GET", acqs, "no Authorization header", auth="none"),
        Request("auth.garbage", "GET", acqs, "a token no one issued", auth="garbage"),
        Request(
            "auth.create_refused",
            "POST",
            acqs,
            "a create without a token",
            body=_acq("d-acq-noauth"),
            auth="none",
        ),
        # -- acquisitions
        Request(
            "acquisition.create", "POST", acqs, "valid create", body=_acq("d-acq", storage_path="/data/d")
        ),
        Request("acquisition.get", "GET", "/acquisitions/d-acq", "read back"),
        Request("acquisition.list", "GET", acqs, "list"),
        Request("acquisition.create.duplicate", "POST", acqs, "same uuid again", body=_acq("d-acq")),
        Request(
            "acquisition.create.aware_z",
            "POST",
            acqs,
            "start_time with Z",
            body=_acq("d-acq-z", start_time=AWARE_Z),
        ),
        Request(
            "acquisition.create.aware_offset",
            "POST",
            acqs,
            "start_time with +01:00",
            body=_acq("d-acq-off", start_time=AWARE_OFFSET),
        ),
        Request(
            "acquisition.create.epoch_datetime",
            "POST",
            acqs,
            "a number as datetime (parsed as aware UTC)",
            body=_acq("d-acq-epoch", start_time=1740564108),
        ),
        Request(
            "acquisition.create.date_only",
            "POST",
            acqs,
            "a date as datetime",
            body=_acq("d-acq-date", end_time="2025-02-26"),
        ),
        Request("acquisition.create.missing_name", "POST", acqs, "no name", body={"uuid": "d-acq-noname"}),
        Request(
            "acquisition.create.after_missing_name",
            "POST",
            acqs,
            "the nameless uuid again, named",
            body=_acq("d-acq-noname"),
        ),
        Request("acquisition.create.missing_uuid", "POST", acqs, "no uuid", body={"name": "x"}),
        Request(
            "acquisition.create.uuid_number", "POST", acqs, "uuid as a number", body=_acq("x") | {"uuid": 123}
        ),
        Request(
            "acquisition.create.name_number", "POST", acqs, "name as a number", body=_acq("d-acq-nn", name=5)
        ),
        Request(
            "acquisition.create.status_unknown",
            "POST",
            acqs,
            "status outside the vocabulary",
            body=_acq("d-acq-st", status="running"),
        ),
        Request(
            "acquisition.create.status_upper",
            "POST",
            acqs,
            "status by enum name",
            body=_acq("d-acq-up", status="STARTED"),
        ),
        Request(
            "acquisition.create.extra_field",
            "POST",
            acqs,
            "an unknown field",
            body=_acq("d-acq-extra", epu_session_id="abc"),
        ),
        Request(
            "acquisition.create.invalid_json", "POST", acqs, "malformed JSON", raw=b'{"uuid": "d-acq-bad",'
        ),
        Request(
            "acquisition.create.array_body",
            "POST",
            acqs,
            "a list instead of an object",
            body=[_acq("d-acq-arr")],
        ),
        Request("acquisition.create.empty_body", "POST", acqs, "no body", raw=b""),
        Request(
            "acquisition.update",
            "PUT",
            "/acquisitions/d-acq",
            "full update",
            body=_acq("d-acq", name="renamed", end_time=NAIVE),
        ),
        Request(
            "acquisition.update.partial",
            "PUT",
            "/acquisitions/d-acq",
            "only one field",
            body={"computer_name": "epu-1"},
        ),
        Request(
            "acquisition.update.unknown", "PUT", "/acquisitions/d-nope", "unknown uuid", body=_acq("d-nope")
        ),
        Request(
            "acquisition.update.aware",
            "PUT",
            "/acquisitions/d-acq",
            "end_time with Z",
            body=_acq("d-acq", end_time=AWARE_Z),
        ),
        Request(
            "acquisition.update.status_unknown",
            "PUT",
            "/acquisitions/d-acq",
            "status outside the vocabulary",
            body=_acq("d-acq", status="running"),
        ),
        Request(
            "acquisition.update.null_name",
            "PUT",
            "/acquisitions/d-acq",
            "name explicitly null (a NOT NULL column)",
            body={"name": None},
        ),
        Request("acquisition.get.unknown", "GET", "/acquisitions/d-nope", "unknown uuid"),
        # -- grids
        Request("grid.create", "POST", grids, "valid create", body=_grid("d-grid", scan_start_time=NAIVE)),
        Request("grid.get", "GET", "/grids/d-grid", "read back"),
        Request("grid.list_of_acquisition", "GET", grids, "list under the acquisition"),
        Request("grid.create.duplicate", "POST", grids, "same uuid again", body=_grid("d-grid")),
        Request(
            "grid.create.unknown_acquisition",
            "POST",
            "/acquisitions/d-nope/grids",
            "parent does not exist",
            body=_grid("d-grid-orphan", acq="d-nope"),
        ),
        Request(
            "grid.create.body_parent_differs",
            "POST",
            grids,
            "body names another (unknown) acquisition than the path",
            body=_grid("d-grid-mismatch", acq="d-nope"),
        ),
        Request(
            "grid.create.missing_name",
            "POST",
            grids,
            "no name",
            body={"uuid": "d-grid-nn", "acquisition_uuid": "d-acq"},
        ),
        Request(
            "grid.create.aware",
            "POST",
            grids,
            "scan_start_time with Z",
            body=_grid("d-grid-z", scan_start_time=AWARE_Z),
        ),
        Request(
            "grid.create.status_unknown",
            "POST",
            grids,
            "status outside the vocabulary",
            body=_grid("d-grid-st", status="busy"),
        ),
        Request(
            "grid.create.extra_field",
            "POST",
            grids,
            "an unknown field (lowmag)",
            body=_grid("d-grid-x", lowmag=False),
        ),
        Request(
            "grid.update",
            "PUT",
            "/grids/d-grid",
            "full update",
            body=_grid("d-grid", atlas_dir="/data/atlas"),
        ),
        Request(
            "grid.update.partial",
            "PUT",
            "/grids/d-grid",
            "only one field",
            body={"atlas_dir": "/data/atlas2"},
        ),
        Request("grid.update.unknown", "PUT", "/grids/d-nope", "unknown uuid", body=_grid("d-nope")),
        Request(
            "grid.update.aware",
            "PUT",
            "/grids/d-grid",
            "scan_end_time with Z",
            body=_grid("d-grid", scan_end_time=AWARE_Z),
        ),
        Request(
            "grid.update.body_parent_unknown",
            "PUT",
            "/grids/d-grid",
            "body moves the grid to an acquisition that does not exist",
            body=_grid("d-grid", acq="d-nope"),
        ),
        Request("grid.registered", "POST", "/grids/d-grid/registered", "all squares registered"),
        Request("grid.registered.unknown", "POST", "/grids/d-nope/registered", "unknown grid"),
        Request("grid.get.unknown", "GET", "/grids/d-nope", "unknown uuid"),
        # -- atlas with tiles
        Request(
            "atlas.create",
            "POST",
            atlas,
            "valid create, two tiles",
            body=_atlas("d-atlas", tiles=("d-tile1", "d-tile2")),
        ),
        Request("atlas.get", "GET", "/atlases/d-atlas", "read back"),
        Request("atlas.get_of_grid", "GET", atlas, "the grid's atlas"),
        Request("atlas.create.duplicate", "POST", atlas, "same uuid again", body=_atlas("d-atlas")),
        Request(
            "atlas.create.unknown_grid",
            "POST",
            "/grids/d-nope/atlas",
            "parent does not exist",
            body=_atlas("d-atlas-orphan", grid="d-nope"),
        ),
        Request(
            "atlas.create.duplicate_tile",
            "POST",
            atlas,
            "a new atlas whose tile uuid exists",
            body=_atlas("d-atlas-dt", tiles=("d-tile1",)),
        ),
        Request(
            "atlas.create.missing_name", "POST", atlas, "no name", body=_atlas("d-atlas-nn") | {"name": None}
        ),
        Request(
            "atlas.create.aware",
            "POST",
            atlas,
            "acquisition_date with Z",
            body=_atlas("d-atlas-z", acquisition_date=AWARE_Z),
        ),
        Request(
            "atlas.create.tile_missing_atlas_uuid",
            "POST",
            atlas,
            "a tile without atlas_uuid",
            body=_atlas("d-atlas-t") | {"tiles": [{"uuid": "d-tile-t", "tile_id": "1"}]},
        ),
        Request(
            "atlas.create.tile_position_float",
            "POST",
            atlas,
            "a fractional tile position",
            body=_atlas("d-atlas-f")
            | {"tiles": [{"uuid": "d-tile-f", "atlas_uuid": "d-atlas-f", "position_x": 1.5}]},
        ),
        Request(
            "atlas.create.second_for_grid",
            "POST",
            atlas,
            "another atlas for the same grid",
            body=_atlas("d-atlas-2"),
        ),
        Request("atlas.get.unknown", "GET", "/atlases/d-nope", "unknown uuid"),
        # -- grid squares: single and batch
        Request("gridsquare.create", "POST", squares, "valid create", body=_square("d-gs1", "1001")),
        Request("gridsquare.get", "GET", "/gridsquares/d-gs1", "read back"),
        Request(
            "gridsquare.create.duplicate", "POST", squares, "same uuid again", body=_square("d-gs1", "1001")
        ),
        Request(
            "gridsquare.create.unknown_grid",
            "POST",
            "/grids/d-nope/gridsquares",
            "parent does not exist",
            body=_square("d-gs-orphan", "9", grid="d-nope"),
        ),
        Request(
            "gridsquare.create.missing_natural_id",
            "POST",
            squares,
            "no gridsquare_id",
            body={"uuid": "d-gs-nid", "grid_uuid": "d-grid"},
        ),
        Request(
            "gridsquare.create.center_text",
            "POST",
            squares,
            "center_x as text",
            body=_square("d-gs-ct", "9", center_x="abc"),
        ),
        Request(
            "gridsquare.create.center_float",
            "POST",
            squares,
            "fractional center_x",
            body=_square("d-gs-cf", "9", center_x=1.5),
        ),
        Request(
            "gridsquare.create.center_numeric_text",
            "POST",
            squares,
            'center_x as "12"',
            body=_square("d-gs-cn", "9", center_x="12"),
        ),
        Request(
            "gridsquare.create.natural_id_number",
            "POST",
            squares,
            "gridsquare_id as a number",
            body=_square("d-gs-nn", "9") | {"gridsquare_id": 9},
        ),
        Request(
            "gridsquare.create.aware",
            "POST",
            squares,
            "acquisition_datetime with Z",
            body=_square("d-gs-z", "9", acquisition_datetime=AWARE_Z),
        ),
        Request(
            "gridsquare.create.status_unknown",
            "POST",
            squares,
            "status outside the vocabulary",
            body=_square("d-gs-st", "9", status="busy"),
        ),
        Request(
            "gridsquare.create.extra_field",
            "POST",
            squares,
            "an unknown field",
            body=_square("d-gs-x", "1010", tile_id="3"),
        ),
        Request(
            "gridsquare.batch",
            "POST",
            batch,
            "valid batch of two",
            body={"gridsquares": [_square("d-gs2", "1002"), _square("d-gs3", "1003")]},
        ),
        Request(
            "gridsquare.batch.existing",
            "POST",
            batch,
            "a uuid that exists",
            body={"gridsquares": [_square("d-gs2", "1002")]},
        ),
        Request(
            "gridsquare.batch.repeated",
            "POST",
            batch,
            "the same uuid twice in one batch",
            body={"gridsquares": [_square("d-gs4", "1004"), _square("d-gs4", "1004")]},
        ),
        Request("gridsquare.batch.empty", "POST", batch, "no squares", body={"gridsquares": []}),
        Request(
            "gridsquare.batch.too_large",
            "POST",
            batch,
            "1001 squares (limit 1000)",
            body={"gridsquares": [_square(f"d-gsl-{n}", str(20000 + n)) for n in range(1001)]},
        ),
        Request(
            "gridsquare.batch.unknown_grid",
            "POST",
            "/grids/d-nope/gridsquares/batch",
            "parent does not exist",
            body={"gridsquares": [_square("d-gs-bo", "9", grid="d-nope")]},
        ),
        Request(
            "gridsquare.batch.body_parent_differs",
            "POST",
            batch,
            "body names another (unknown) grid than the path",
            body={"gridsquares": [_square("d-gs-bm", "9", grid="d-nope")]},
        ),
        Request(
            "gridsquare.batch.aware",
            "POST",
            batch,
            "acquisition_datetime with Z",
            body={"gridsquares": [_square("d-gs-bz", "9", acquisition_datetime=AWARE_Z)]},
        ),
        Request("gridsquare.batch.not_wrapped", "POST", batch, "a bare list", body=[_square("d-gs-bl", "9")]),
        Request(
            "gridsquare.update",
            "PUT",
            "/gridsquares/d-gs1",
            "full update",
            body=_square("d-gs1", "1001", selected=True),
        ),
        Request(
            "gridsquare.update.partial",
            "PUT",
            "/gridsquares/d-gs1",
            "only one field",
            body={"selected": False},
        ),
        Request(
            "gridsquare.update.unknown",
            "PUT",
            "/gridsquares/d-nope",
            "unknown uuid",
            body=_square("d-nope", "9"),
        ),
        Request(
            "gridsquare.update.aware",
            "PUT",
            "/gridsquares/d-gs1",
            "acquisition_datetime with Z",
            body=_square("d-gs1", "1001", acquisition_datetime=AWARE_Z),
        ),
        Request(
            "gridsquare.update.body_parent_unknown",
            "PUT",
            "/gridsquares/d-gs1",
            "body moves the square to a grid that does not exist",
            body=_square("d-gs1", "1001", grid="d-nope"),
        ),
        Request(
            "gridsquare.update.null_natural_id",
            "PUT",
            "/gridsquares/d-gs1",
            "gridsquare_id explicitly null (a NOT NULL column)",
            body={"gridsquare_id": None},
        ),
        Request(
            "gridsquare.registered",
            "POST",
            "/gridsquares/d-gs1/registered",
            "all holes registered",
            params={"count": "2"},
        ),
        Request("gridsquare.registered.unknown", "POST", "/gridsquares/d-nope/registered", "unknown square"),
        Request(
            "gridsquare.registered.count_text",
            "POST",
            "/gridsquares/d-gs1/registered",
            "count not a number",
            params={"count": "two"},
        ),
        Request("gridsquare.list_of_grid", "GET", squares, "list under the grid"),
        # -- atlas tile positions
        Request(
            "tile.link",
            "POST",
            links,
            "place two squares on a tile",
            body=[_position("d-gs1"), _position("d-gs2")],
        ),
        Request("tile.link.repeat", "POST", links, "the same placements again", body=[_position("d-gs1")]),
        Request(
            "tile.link.other_tile",
            "POST",
            "/atlas-tiles/d-tile2/gridsquares",
            "a square on a second tile",
            body=[_position("d-gs1")],
        ),
        Request(
            "tile.link.unknown_tile",
            "POST",
            "/atlas-tiles/d-nope/gridsquares",
            "tile does not exist",
            body=[_position("d-gs3")],
        ),
        Request(
            "tile.link.unknown_square", "POST", links, "square does not exist", body=[_position("d-nope")]
        ),
        Request(
            "tile.link.no_square", "POST", links, "a position without gridsquare_uuid", body=[_position(None)]
        ),
        Request(
            "tile.link.float", "POST", links, "fractional center_x", body=[_position("d-gs3", center_x=1.5)]
        ),
        Request(
            "tile.link.missing_size",
            "POST",
            links,
            "no size_width",
            body=[{"gridsquare_uuid": "d-gs3", "center_x": 1, "center_y": 2, "size_height": 3}],
        ),
        Request("tile.link.empty", "POST", links, "an empty list", body=[]),
        Request(
            "tile.link.not_a_list", "POST", links, "an object instead of a list", body=_position("d-gs3")
        ),
        # -- foil holes (batch per square)
        Request(
            "foilhole.create",
            "POST",
            holes,
            "valid batch of two",
            body=[_hole("d-fh1", "5001"), _hole("d-fh2", "5002")],
        ),
        Request("foilhole.get", "GET", "/foilholes/d-fh1", "read back"),
        Request("foilhole.list_of_square", "GET", holes, "list under the square"),
        Request(
            "foilhole.create.duplicate", "POST", holes, "a uuid that exists", body=[_hole("d-fh1", "5001")]
        ),
        Request(
            "foilhole.create.repeated",
            "POST",
            holes,
            "the same uuid twice in one batch",
            body=[_hole("d-fh3", "5003"), _hole("d-fh3", "5003")],
        ),
        Request(
            "foilhole.create.unknown_square",
            "POST",
            "/gridsquares/d-nope/foilholes",
            "parent does not exist",
            body=[_hole("d-fh-orphan", "9", square="d-nope")],
        ),
        Request(
            "foilhole.create.empty_unknown_square",
            "POST",
            "/gridsquares/d-nope/foilholes",
            "an empty list for an unknown square",
            body=[],
        ),
        Request(
            "foilhole.create.body_parent_differs",
            "POST",
            holes,
            "body names another (unknown) square than the path",
            body=[_hole("d-fh-bm", "9", square="d-nope")],
        ),
        Request(
            "foilhole.create.missing_square_id",
            "POST",
            holes,
            "no gridsquare_id",
            body=[_hole("d-fh-ns", "9") | {"gridsquare_id": None}],
        ),
        Request(
            "foilhole.create.location_float",
            "POST",
            holes,
            "fractional x_location",
            body=[_hole("d-fh-lf", "9", x_location=1.5)],
        ),
        Request(
            "foilhole.create.status_unknown",
            "POST",
            holes,
            "status outside the vocabulary",
            body=[_hole("d-fh-st", "9", status="busy")],
        ),
        Request(
            "foilhole.create.near_grid_bar",
            "POST",
            holes,
            "a hole near the grid bar",
            body=[_hole("d-fh-ngb", "5009", is_near_grid_bar=True)],
        ),
        Request(
            "foilhole.create.not_a_list",
            "POST",
            holes,
            "an object instead of a list",
            body=_hole("d-fh-obj", "9"),
        ),
        Request(
            "foilhole.update",
            "PUT",
            "/foilholes/d-fh1",
            "full update",
            body=_hole("d-fh1", "5001", quality=0.5),
        ),
        Request(
            "foilhole.update.partial", "PUT", "/foilholes/d-fh1", "only one field", body={"quality": 0.4}
        ),
        Request(
            "foilhole.update.unknown", "PUT", "/foilholes/d-nope", "unknown uuid", body=_hole("d-nope", "9")
        ),
        # -- micrographs (single; the batch is a testbed extension the agent tries first)
        Request("micrograph.create", "POST", mics, "valid create", body=_mic("d-mic1")),
        Request("micrograph.get", "GET", "/micrographs/d-mic1", "read back"),
        Request("micrograph.list_of_hole", "GET", mics, "list under the hole"),
        Request("micrograph.create.duplicate", "POST", mics, "same uuid again", body=_mic("d-mic1")),
        Request(
            "micrograph.create.unknown_hole",
            "POST",
            "/foilholes/d-nope/micrographs",
            "parent does not exist",
            body=_mic("d-mic-orphan", hole="d-nope"),
        ),
        Request(
            "micrograph.create.aware",
            "POST",
            mics,
            "acquisition_datetime with +01:00",
            body=_mic("d-mic-z", acquisition_datetime=AWARE_OFFSET),
        ),
        Request(
            "micrograph.create.missing_hole_id",
            "POST",
            mics,
            "no foilhole_id",
            body=_mic("d-mic-nh") | {"foilhole_id": None},
        ),
        Request(
            "micrograph.create.status_unknown",
            "POST",
            mics,
            "status outside the vocabulary",
            body=_mic("d-mic-st", status="busy"),
        ),
        Request(
            "micrograph.create.defocus_text",
            "POST",
            mics,
            "defocus as text",
            body=_mic("d-mic-dt", defocus="near"),
        ),
        Request(
            "micrograph.create.extra_field",
            "POST",
            mics,
            "EPU's id in a field the API lacks",
            body=_mic("d-mic-x", micrograph_id="m1"),
        ),
        Request(
            "micrograph.batch",
            "POST",
            "/foilholes/micrographs/batch",
            "the testbed's micrograph batch extension",
            body={"micrographs": [_mic("d-mic-b1")]},
        ),
        Request(
            "micrograph.update",
            "PUT",
            "/micrographs/d-mic1",
            "full update",
            body=_mic("d-mic1", defocus=-2.5e-6),
        ),
        Request(
            "micrograph.update.partial",
            "PUT",
            "/micrographs/d-mic1",
            "only one field",
            body={"defocus": -1.0e-6},
        ),
        Request(
            "micrograph.update.unknown", "PUT", "/micrographs/d-nope", "unknown uuid", body=_mic("d-nope")
        ),
        Request(
            "micrograph.update.aware",
            "PUT",
            "/micrographs/d-mic1",
            "acquisition_datetime with Z",
            body=_mic("d-mic1", acquisition_datetime=AWARE_Z),
        ),
        Request(
            "micrograph.update.body_parent_unknown",
            "PUT",
            "/micrographs/d-mic1",
            "body moves the micrograph to a hole that does not exist",
            body=_mic("d-mic1", hole="d-nope"),
        ),
        Request(
            "micrograph.update.renames",
            "PUT",
            "/micrographs/d-mic-x",
            "body uuid other than the path's (SmartEM renames the row)",
            body=_mic("d-mic-renamed"),
        ),
        Request("micrograph.get.unknown", "GET", "/micrographs/d-nope", "unknown uuid"),
    ]


def _agent_steps() -> list[Step]:
    create = "/debug/sessions/create"
    instruct = f"/debug/session/{SESSION}/create-instruction"
    heartbeat = f"/agent/{AGENT}/session/{SESSION}/heartbeat"
    logs = f"/agent/{AGENT}/session/{SESSION}/logs"
    instruction = {"instruction_type": "agent.status.request", "payload": {}, "expires_in_minutes": 60}
    return [
        # -- sessions and instructions (SmartEM's debug routes: the only way to make them)
        Request(
            "session.create",
            "POST",
            create,
            "a session with a chosen id",
            body={"session_id": SESSION, "agent_id": AGENT, "name": "diff"},
        ),
        Request(
            "session.create.other_agent",
            "POST",
            create,
            "a session of another agent",
            body={"session_id": OTHER_SESSION, "agent_id": OTHER_AGENT, "name": "other"},
        ),
        Request(
            "session.create.duplicate",
            "POST",
            create,
            "the same session id again",
            body={"session_id": SESSION, "agent_id": AGENT},
        ),
        Request(
            "session.create.unknown_acquisition",
            "POST",
            create,
            "names an acquisition that does not exist",
            body={"session_id": "diff-s-orphan", "agent_id": AGENT, "acquisition_uuid": "d-nope"},
        ),
        Request(
            "instruction.create.1",
            "POST",
            instruct,
            "pending instruction 1",
            body=instruction,
            save={"i1": "instruction_id"},
        ),
        Request(
            "instruction.create.2",
            "POST",
            instruct,
            "pending instruction 2",
            body=instruction,
            save={"i2": "instruction_id"},
        ),
        Request(
            "instruction.create.3",
            "POST",
            instruct,
            "pending instruction 3",
            body=instruction,
            save={"i3": "instruction_id"},
        ),
        Request(
            "instruction.create.unknown_session",
            "POST",
            "/debug/session/diff-nope/create-instruction",
            "unknown session",
            body=instruction,
        ),
        Request("heartbeat.before_connect", "POST", heartbeat, "no stream open yet"),
        Request(
            "ack.before_connect",
            "POST",
            _ack_path("{i1}"),
            "pending, never sent, no stream",
            body={"status": "processed"},
        ),
        # -- the stream delivers the three pending instructions right after `connection`
        Stream("stream.open", AGENT, SESSION, "connect and drain", until=4),
        Stream("stream.foreign_session", OTHER_AGENT, SESSION, "another agent's session", until=1),
        Stream("stream.unknown_session", AGENT, "diff-nope", "a session that does not exist", until=1),
        Request("heartbeat", "POST", heartbeat, "with the stream open"),
        Request(
            "heartbeat.unknown_session",
            "POST",
            f"/agent/{AGENT}/session/diff-nope/heartbeat",
            "unknown session",
        ),
        Request(
            "heartbeat.wrong_agent",
            "POST",
            f"/agent/{OTHER_AGENT}/session/{SESSION}/heartbeat",
            "session of another agent",
        ),
        # -- acknowledgements
        Request(
            "ack.processed",
            "POST",
            _ack_path("{i1}"),
            "final ack",
            body={"status": "processed", "result": "ok", "processing_time_ms": 12},
        ),
        Request(
            "ack.repeated",
            "POST",
            _ack_path("{i1}"),
            "the same final ack again",
            body={"status": "processed", "result": "ok"},
        ),
        Request(
            "ack.other_final",
            "POST",
            _ack_path("{i1}"),
            "a different final status after the final one",
            body={"status": "failed", "error_message": "boom"},
        ),
        Request(
            "ack.received",
            "POST",
            _ack_path("{i2}"),
            "two-phase: received first",
            body={"status": "received"},
        ),
        Request(
            "ack.received_then_processed",
            "POST",
            _ack_path("{i2}"),
            "two-phase: then processed",
            body={"status": "processed"},
        ),
        Request(
            "ack.extra_field",
            "POST",
            _ack_path("{i3}"),
            "an unknown field",
            body={"status": "processed", "instruction_id": "x"},
        ),
        Request(
            "ack.status_unknown",
            "POST",
            _ack_path("{i3}"),
            "status outside the vocabulary",
            body={"status": "done"},
        ),
        Request(
            "ack.time_text",
            "POST",
            _ack_path("{i3}"),
            "processing_time_ms as text",
            body={"status": "processed", "processing_time_ms": "fast"},
        ),
        Request("ack.invalid_json", "POST", _ack_path("{i3}"), "malformed JSON", raw=b"{status: processed}"),
        Request(
            "ack.unknown_instruction",
            "POST",
            _ack_path("diff-nope"),
            "unknown instruction",
            body={"status": "processed"},
        ),
        Request(
            "ack.unknown_session",
            "POST",
            _ack_path("{i3}", session="diff-nope"),
            "unknown session",
            body={"status": "processed"},
        ),
        Request(
            "ack.wrong_agent",
            "POST",
            _ack_path("{i3}", agent=OTHER_AGENT),
            "session of another agent",
            body={"status": "processed"},
        ),
        Request(
            "ack.other_session",
            "POST",
            _ack_path("{i3}", session=OTHER_SESSION, agent=OTHER_AGENT),
            "instruction of another session (that has no stream)",
            body={"status": "processed"},
        ),
        Request(
            "ack.declined_aware_processed_at",
            "POST",
            _ack_path("{i3}"),
            "declined, processed_at with an offset (never stored)",
            body={"status": "declined", "error_message": "unknown type", "processed_at": AWARE_Z},
        ),
        # -- log shipping
        Request("logs", "POST", logs, "two records", body={"logs": [_log(), _log(level="WARNING")]}),
        Request(
            "logs.unknown_session",
            "POST",
            f"/agent/{AGENT}/session/diff-nope/logs",
            "unknown session",
            body={"logs": [_log()]},
        ),
        Request(
            "logs.wrong_agent",
            "POST",
            f"/agent/{OTHER_AGENT}/session/{SESSION}/logs",
            "session of another agent",
            body={"logs": [_log()]},
        ),
        Request(
            "logs.missing_message",
            "POST",
            logs,
            "a record without message",
            body={"logs": [{"timestamp": NAIVE, "level": "INFO", "logger_name": "a"}]},
        ),
        Request("logs.aware", "POST", logs, "timestamp with Z", body={"logs": [_log(timestamp=AWARE_Z)]}),
        Request(
            "logs.over_limit",
            "POST",
            logs,
            "501 records (500 stored)",
            body={"logs": [_log() for _ in range(501)]},
        ),
        CloseStream("stream.open"),
        CloseStream("stream.foreign_session"),
        CloseStream("stream.unknown_session"),
    ]


CORPUS: tuple[Step, ...] = (*_entity_steps(), *_agent_steps())
"""Every step, in the order it runs."""


# -- running it ----------------------------------------------------------------------------------------------


class _OpenStream:
    """An SSE response held open after its first events were read (the backend keeps the connection live)."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str], until: int) -> None:
        self._cm = client.stream("GET", path, headers={**headers, "Accept": "text/event-stream"})
        self.response = self._cm.__enter__()
        self.events: list[str] = []
        if self.response.status_code != 200:
            self.response.read()
            return
        # Kept on the object: a line iterator that is garbage-collected closes the connection, and the strict
        # testbed (unlike SmartEM) notices a closed stream at once.
        self._lines: Iterator[str] = self.response.iter_lines()
        try:
            for line in self._lines:
                if line.startswith("event:"):
                    self.events.append(line.partition(":")[2].strip())
                    if len(self.events) >= until:
                        break
        except httpx.HTTPError:
            pass  # the server ended the stream (an `error` event is followed by the end)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _headers(auth: AuthMode, token: str | None) -> dict[str, str]:
    if auth == "none" or (auth == "valid" and token is None):
        return {}
    if auth == "garbage":
        return {"Authorization": "Bearer not-a-token"}
    return {"Authorization": f"Bearer {token}"}


def _send(client: httpx.Client, step: Request, path: str, headers: dict[str, str]) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": headers, "params": step.params}
    if step.raw is not None:
        kwargs["content"] = step.raw
        kwargs["headers"] = {**headers, "Content-Type": "application/json"}
    elif step.body is not None:
        kwargs["content"] = json.dumps(step.body).encode()
        kwargs["headers"] = {**headers, "Content-Type": "application/json"}
    try:
        return client.request(step.method, path, **kwargs)
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
        # SmartEM closes the keep-alive connection after an unhandled 500; a request that raced that close was
        # never processed, so it is sent once more (the pool opens a fresh connection).
        return client.request(step.method, path, **kwargs)


def run_corpus(
    base_url: str, *, token: str | None = None, steps: Sequence[Step] = CORPUS, timeout: float = 30.0
) -> dict[str, Outcome]:
    """Send ``steps`` in order to the backend at ``base_url``; one :class:`Outcome` per request and stream step.

    ``token`` is the backend's valid bearer token (``None``: an open backend). A captured value that a failed
    step did not provide leaves its placeholder in later paths, which then address an instruction that does not
    exist, as a client that lost the id would.
    """
    outcomes: dict[str, Outcome] = {}
    context: dict[str, str] = {}
    streams: dict[str, _OpenStream] = {}

    def fill(path: str) -> str:
        for key, value in context.items():
            path = path.replace("{" + key + "}", value)
        return path

    with (
        httpx.Client(base_url=base_url, timeout=timeout) as client,
        httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, read=60.0)) as stream_client,
    ):
        try:
            for step in steps:
                if isinstance(step, CloseStream):
                    opened = streams.pop(step.stream, None)
                    if opened is not None:
                        opened.close()
                    continue
                if isinstance(step, Stream):
                    path = f"/agent/{step.agent_id}/session/{step.session_id}/instructions/stream"
                    opened = _OpenStream(stream_client, path, _headers("valid", token), step.until)
                    streams[step.name] = opened
                    outcomes[step.name] = Outcome(
                        opened.response.status_code,
                        opened.response.headers.get("content-type", ""),
                        "",
                        tuple(opened.events),
                    )
                    continue
                response = _send(client, step, fill(step.path), _headers(step.auth, token))
                outcomes[step.name] = Outcome(
                    response.status_code, response.headers.get("content-type", ""), response.text[:20000]
                )
                if response.is_success and step.save:
                    data = response.json()
                    for key, source in step.save.items():
                        context[key] = str(data[source])
        finally:
            for opened in streams.values():
                opened.close()
    return outcomes
