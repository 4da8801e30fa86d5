"""State store: merging contributions, dirty tracking, orphans, confirmation by version, spill, restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.ingest.identity import EntityKind, entity_uuid
from agent.ingest.store import Contribution, IngestStore
from agent.state.database import open_database


def _render(kind: EntityKind, merged: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    return dict(merged), bool(merged.get("near"))


def _c(
    kind: EntityKind, nid: str, parent: str | None, source: str, fields: dict[str, Any], **kw: Any
) -> Contribution:
    return Contribution(
        kind=kind,
        uuid=entity_uuid("a", kind, nid),
        acq_key="a",
        natural_id=nid,
        parent_uuid=parent,
        source=source,
        rank=kw.pop("rank", 0),
        order_key=kw.pop("order_key", ""),
        fields=fields,
        **kw,
    )


def _apply(store: IngestStore, *contribs: Contribution) -> int:
    with store.db.transaction() as conn:
        return IngestStore.apply_contributions(conn, contribs, time.time(), _render).enqueued


def test_child_before_parent_waits_as_orphan_then_is_sendable(tmp_path: Path) -> None:
    store = IngestStore(open_database(tmp_path))
    hole = entity_uuid("a", EntityKind.FOILHOLE, "7")
    assert _apply(store, _c(EntityKind.MICROGRAPH, "m1", hole, "micrograph", {"x": 1})) == 1
    assert store.orphans()["by_kind"] == {"micrograph": 1}
    assert store.sendable(10, time.time()) == []
    _apply(store, _c(EntityKind.FOILHOLE, "7", None, "dm", {"d": 1}))
    assert store.orphans()["total"] == 0
    items = store.sendable(10, time.time())
    assert [i.kind for i in items] == [EntityKind.FOILHOLE]  # the micrograph waits for its parent's creation
    store.confirm(items, time.time())
    assert [i.kind for i in store.sendable(10, time.time())] == [EntityKind.MICROGRAPH]


def test_sources_merge_and_an_older_image_never_wins(tmp_path: Path) -> None:
    store = IngestStore(open_database(tmp_path))
    dm = _c(EntityKind.FOILHOLE, "7", None, "dm", {"x_location": 5}, rank=1)
    new_img = _c(
        EntityKind.FOILHOLE, "7", None, "img", {"center_x": 2.0}, rank=2, order_key="20240101_120010"
    )
    old_img = _c(
        EntityKind.FOILHOLE, "7", None, "img", {"center_x": 1.0}, rank=2, order_key="20240101_120000"
    )
    _apply(store, dm, new_img, old_img)
    [item] = store.sendable(10, time.time())
    assert item.payload == {"x_location": 5, "center_x": 2.0}


def test_unchanged_payload_is_not_resent_and_new_version_survives_confirmation(tmp_path: Path) -> None:
    store = IngestStore(open_database(tmp_path))
    c1 = _c(EntityKind.GRIDSQUARE, "1", None, "dm", {"state": "a"})
    _apply(store, c1)
    [sent] = store.sendable(10, time.time())
    # A newer version arrives while the first is in flight: confirming the old one keeps the row.
    _apply(store, _c(EntityKind.GRIDSQUARE, "1", None, "dm", {"state": "b"}))
    store.confirm([sent], time.time())
    [again] = store.sendable(10, time.time())
    assert again.payload == {"state": "b"}
    assert again.created
    store.confirm([again], time.time())
    assert store.outbox_depth() == 0
    assert _apply(store, _c(EntityKind.GRIDSQUARE, "1", None, "dm", {"state": "b"})) == 0


def test_skipped_entities_never_enter_the_outbox(tmp_path: Path) -> None:
    store = IngestStore(open_database(tmp_path))
    assert _apply(store, _c(EntityKind.FOILHOLE, "9", None, "dm", {"near": True})) == 0
    assert store.entity_counts()["foilhole"]["skipped"] == 1


def test_secondary_source_alone_does_not_make_an_entity_sendable(tmp_path: Path) -> None:
    store = IngestStore(open_database(tmp_path))
    _apply(store, _c(EntityKind.MICROGRAPH, "m", None, "fractions", {"f": 1}, primary=False))
    assert store.outbox_depth() == 0
    _apply(store, _c(EntityKind.MICROGRAPH, "m", None, "micrograph", {"d": 1}))
    [item] = store.sendable(10, time.time())
    assert item.payload == {"f": 1, "d": 1}


def test_state_survives_reopening_and_deferral_and_spill_work(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    store = IngestStore(db)
    _apply(store, _c(EntityKind.ACQUISITION, "a", None, "session", {"name": "n"}))
    items = store.sendable(10, time.time())
    store.defer(items, "backend said no", 60, time.time())
    assert store.sendable(10, time.time()) == []
    assert store.deferred_errors()[0]["error"] == "backend said no"
    store.spill(["/x/1", "/x/2"], time.time())
    db.close()
    store = IngestStore(open_database(tmp_path))
    assert store.outbox_depth() == 1
    assert store.unspill(1) == ["/x/1"]
    assert store.spilled() == 1
    store.mark_missing([items[0].uuid], time.time())
    assert len(store.sendable(10, time.time())) == 1  # re-enqueued for immediate creation
