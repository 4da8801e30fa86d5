"""Fuzzy SharkSEM name lookup."""

from __future__ import annotations

import pytest

from agent.devices.naming import normalise_name, parse_enum_map, resolve_entry

NAMES = ["Image Shift", "Tilt Correction", "Scan Rotation", "Gun Shift", "Gun Tilt"]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (0, 0),
        ("2", 2),
        ("tilt_correction", 1),
        ("TILT CORRECTION", 1),
        ("tilt-corr", 1),
        ("rotation", 2),
        ("scan rotaton", 2),
        ("gunshift", 3),
    ],
)
def test_resolves(query: str | int, index: int) -> None:
    assert resolve_entry(NAMES, query) == index


@pytest.mark.parametrize("query", ["gun", "shift", "", "warp", 9, -1, True])
def test_rejects(query: str | int) -> None:
    with pytest.raises(LookupError):
        resolve_entry(NAMES, query)


def test_normalise_and_enum_map() -> None:
    assert normalise_name("Beam  Shift (X/Y)") == "beamshiftxy"
    text = "geom.0.name=Image Shift\ngeom.1.name=Tilt Correction\ncen.0.name=Beam Shift\nbogus\n"
    assert parse_enum_map(text, "geom") == {0: "Image Shift", 1: "Tilt Correction"}
    assert parse_enum_map(text, "cen") == {0: "Beam Shift"}
