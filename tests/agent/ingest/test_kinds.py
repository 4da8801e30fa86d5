"""The entity-kind table: complete, parents sent first, ranks as stored, request specs built per kind."""

from __future__ import annotations

import pytest

from agent.ingest.identity import EntityKind
from agent.ingest.kinds import KINDS, TileLinks
from converters.paths import EpuFileKind
from converters.requests import FoilHoleCreateRequest, GridSquarePositionRequest, MicrographCreateRequest


def test_every_kind_has_an_entry_and_parents_are_sent_first() -> None:
    assert set(KINDS) == set(EntityKind)
    for spec in KINDS.values():
        if spec.parent is not None:
            assert KINDS[spec.parent].send_order < spec.send_order, spec.kind
    # Tile links reference grid squares, which must exist first.
    assert KINDS[EntityKind.GRIDSQUARE].send_order < KINDS[EntityKind.ATLAS_TILE].send_order


def test_a_file_kind_has_one_rank_whatever_the_entity() -> None:
    # Ranks are stored with each contribution: one value per file kind, as released.
    released = {
        EpuFileKind.SESSION: 0,
        EpuFileKind.ATLAS: 1,
        EpuFileKind.GRIDSQUARE_METADATA: 2,
        EpuFileKind.GRIDSQUARE_IMAGE: 3,
        EpuFileKind.FOILHOLE_IMAGE: 4,
        EpuFileKind.MICROGRAPH: 5,
        EpuFileKind.FRACTIONS: 6,
    }
    for spec in KINDS.values():
        for source in spec.sources:
            assert source.rank == released[source.file_kind], (spec.kind, source.file_kind)
    assert not KINDS[EntityKind.MICROGRAPH].source(EpuFileKind.FRACTIONS).primary
    with pytest.raises(KeyError):
        KINDS[EntityKind.MICROGRAPH].source(EpuFileKind.SESSION)


def test_request_specs_match_the_endpoints() -> None:
    hole = KINDS[EntityKind.FOILHOLE]
    req = hole.request({"uuid": "fh", "foilhole_id": "1", "gridsquare_id": "2", "gridsquare_uuid": "gs"})
    assert isinstance(req, FoilHoleCreateRequest)
    single = hole.create(req, "fh", "gs")
    assert (single.method, single.path) == ("POST", "/gridsquares/gs/foilholes")
    assert single.json == [req.model_dump(mode="json", exclude_none=True)]
    assert hole.update is not None
    assert (hole.update(req, "fh", "gs").method, hole.update(req, "fh", "gs").path) == (
        "PUT",
        "/foilholes/fh",
    )
    assert KINDS[EntityKind.ATLAS].update is None

    mic = KINDS[EntityKind.MICROGRAPH]
    m = MicrographCreateRequest(uuid="m", foilhole_id="1", foilhole_uuid="fh")
    assert mic.batch is not None
    assert mic.batch.optional
    assert mic.batch.min_size == 2
    assert mic.batch.build(None, [m, m]).path == "/foilholes/micrographs/batch"

    tile = KINDS[EntityKind.ATLAS_TILE]
    links = TileLinks(
        positions=[GridSquarePositionRequest(center_x=1, center_y=2, size_width=3, size_height=4)]
    )
    spec = tile.create(links, "t1", "a1")
    assert (spec.path, spec.json) == (
        "/atlas-tiles/t1/gridsquares",
        [links.positions[0].model_dump(exclude_none=True)],
    )
    assert tile.repeat_is_done
