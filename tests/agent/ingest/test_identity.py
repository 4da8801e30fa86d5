"""Deterministic identity: same inputs, same UUID; any difference, another UUID."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from agent.ingest.identity import EM_AGENT_NAMESPACE, EntityKind, acquisition_key, entity_uuid


def test_uuid_is_uuid5_of_the_documented_name() -> None:
    expected = uuid.uuid5(EM_AGENT_NAMESPACE, "grid1/foilhole/123")
    assert entity_uuid("grid1", EntityKind.FOILHOLE, "123") == str(expected)
    assert entity_uuid("grid1", "foilhole", "123") == str(expected)


def test_uuid_differs_by_acquisition_kind_and_id() -> None:
    base = entity_uuid("a", EntityKind.GRIDSQUARE, "1")
    assert base != entity_uuid("b", EntityKind.GRIDSQUARE, "1")
    assert base != entity_uuid("a", EntityKind.FOILHOLE, "1")
    assert base != entity_uuid("a", EntityKind.GRIDSQUARE, "2")


def test_acquisition_key_is_relative_posix_path() -> None:
    root = PurePosixPath("/data/visit")
    assert acquisition_key(PurePosixPath("/data/visit/Supervisor_1/sub"), root) == "Supervisor_1/sub"
    assert acquisition_key(root, root) == "."
    assert acquisition_key(PurePosixPath("/elsewhere/s"), root) == "/elsewhere/s"
