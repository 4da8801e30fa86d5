"""Compare a :class:`~testbed.epu.manifest.Manifest` with what was observed: parsed files or backend entities.

Two observation sources:

* :func:`observe_files` parses an EPU folder with ``converters`` (merging partial models the way the agent
does)
  and returns records in manifest terms: this checks that the generator writes exactly what its manifest says.
* :func:`observe_backend` maps the testbed backend's read endpoints (SmartEM entity shapes) onto the same
terms,
  for the demo and the end-to-end tests.

Both produce :data:`Records`: ``{kind: {(acquisition_key, natural_id): {field: value}}}``. :func:`compare`
checks
them against :func:`expected_records` of a manifest and returns a :class:`ManifestDiff`.

The comparison core lives in :mod:`testbed.epu.compare_records` and the file observation in
:mod:`testbed.epu.compare_files`; this module observes the backend and holds the two entry points.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from testbed.epu.compare_files import observe_files
from testbed.epu.compare_records import ManifestDiff, Records, compare, expected_records
from testbed.epu.manifest import KINDS, Manifest


def compare_with_files(
    manifest: Manifest,
    root: str | os.PathLike[str],
    files: Iterable[str | os.PathLike[str]] | None = None,
    *,
    complete: Iterable[str] = KINDS,
) -> ManifestDiff:
    """Parse ``root`` (or ``files``) with ``converters``; compare with ``manifest`` on :data:`FILE_FIELDS`."""
    return compare(expected_records(manifest), observe_files(root, files), complete=complete)


# --------------------------------------------------------------------------------------------------------------
# Observing the testbed backend
# --------------------------------------------------------------------------------------------------------------

BACKEND_FIELDS: dict[str, tuple[str, ...]] = {
    "acquisition": (),
    "grid": ("name",),
    "atlas": ("atlas_id",),
    "atlas_tile": ("position_x", "position_y", "size_x", "size_y", "base_filename"),
    "gridsquare": ("stage_position_x", "stage_position_y", "stage_position_z", "selected"),
    "foilhole": ("gridsquare_id", "x_stage_position", "y_stage_position", "is_near_grid_bar"),
    "micrograph": ("foilhole_id", "location_id"),
}
"""Fields compared with backend entities: the ones every SmartEM-compatible mapping sends unchanged."""


def observe_backend(tree: Mapping[str, Any], acquisition_key: str, manifest: Manifest) -> Records:
    """Map one acquisition's backend entities onto manifest :data:`Records`.

    ``tree`` is the testbed backend's ``GET /testbed/acquisitions/{uuid}/entities`` answer
    (``BackendServer.acquisition_entities``): ``{"entities": {kind: [{"uuid", "data": <request body>, ...}]}}``.
    SmartEM requests carry natural ids as fields, except for micrographs, whose stem never reaches the backend:
    they are identified by (foil hole id, ``location_id``), which is unique per hole in generated sessions.
    """
    entities: Mapping[str, list[Mapping[str, Any]]] = tree.get("entities", {})
    stems = {
        (m.foilhole_id, m.location_id): m.micrograph_id
        for m in manifest.micrographs
        if m.acquisition_key == acquisition_key
    }
    records: Records = {kind: {} for kind in KINDS}
    squares_by_uuid: dict[str, str] = {}
    for kind in KINDS:
        for entity in entities.get(kind, []):
            data: Mapping[str, Any] = entity.get("data", {})
            if kind in ("acquisition", "grid"):
                natural = acquisition_key
            elif kind == "atlas":
                natural = str(data.get("atlas_id"))
            elif kind == "atlas_tile":
                natural = str(data.get("tile_id"))
            elif kind == "gridsquare":
                natural = str(data.get("gridsquare_id"))
                squares_by_uuid[str(entity.get("uuid"))] = natural
            elif kind == "foilhole":
                natural = str(data.get("foilhole_id"))
            else:
                stem = stems.get((str(data.get("foilhole_id")), str(data.get("location_id"))))
                natural = stem or f"unknown:{data.get('foilhole_id')}/{data.get('location_id')}"
            record = {name: data[name] for name in BACKEND_FIELDS[kind] if name in data}
            key = (acquisition_key, natural)
            if key in records[kind]:
                records[kind][(acquisition_key, f"{natural}#duplicate:{entity.get('uuid')}")] = record
            else:
                records[kind][key] = record
    return records


def compare_with_backend(
    manifest: Manifest,
    trees: Mapping[str, Mapping[str, Any]],
    *,
    include_near_grid_bar: bool = False,
) -> ManifestDiff:
    """Compare ``manifest`` with the backend's entities, ``trees`` keyed by acquisition key.

    By default near-grid-bar holes are not expected (SmartEM's filter). Duplicates show up as unexpected keys.
    """
    observed: Records = {kind: {} for kind in KINDS}
    for key, tree in trees.items():
        for kind, entries in observe_backend(tree, key, manifest).items():
            observed[kind].update(entries)
    expected = expected_records(manifest, include_near_grid_bar=include_near_grid_bar)
    return compare(expected, observed, fields=BACKEND_FIELDS)


__all__ = [
    "BACKEND_FIELDS",
    "ManifestDiff",
    "compare_with_backend",
    "compare_with_files",
    "observe_backend",
]
