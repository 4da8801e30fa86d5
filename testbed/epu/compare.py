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
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from converters import (
    AtlasData,
    AtlasTileData,
    ConverterError,
    FoilHoleData,
    GridSquareData,
    MicrographData,
    ParsedAtlas,
    ParsedFoilHoleImage,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSession,
    classify_path,
    merge,
    parse_file,
)
from converters.paths import EpuFileKind
from testbed.epu.manifest import KINDS, Manifest

Key = tuple[str, str]
Records = dict[str, dict[Key, dict[str, Any]]]
"""``{kind: {(acquisition_key, natural_id): {field: value}}}`` in manifest field names and units."""

FILE_FIELDS: dict[str, tuple[str, ...]] = {
    "acquisition": (
        "name",
        "session_id",
        "start_time",
        "storage_path",
        "atlas_path",
        "clustering_mode",
        "epu_version",
    ),
    "grid": ("name", "data_dir", "atlas_dir", "scan_start_time"),
    "atlas": ("atlas_id", "name", "description", "acquisition_date", "storage_folder", "path", "tile_count"),
    "atlas_tile": (
        "atlas_id",
        "tile_index",
        "position_x",
        "position_y",
        "size_x",
        "size_y",
        "file_format",
        "base_filename",
        "gridsquares",
    ),
    "gridsquare": (
        "atlas_node_id",
        "state",
        "selected",
        "unusable",
        "rotation",
        "stage_position_x",
        "stage_position_y",
        "stage_position_z",
        "center_x",
        "center_y",
        "size_width",
        "size_height",
        "physical_x",
        "physical_y",
        "tile_id",
        "acquisition_datetime",
        "defocus",
        "applied_defocus",
        "magnification",
        "pixel_size",
        "detector_name",
        "foilhole_count",
    ),
    "foilhole": (
        "gridsquare_id",
        "center_x",
        "center_y",
        "size_width",
        "size_height",
        "x_stage_position",
        "y_stage_position",
        "quality",
        "is_near_grid_bar",
        "selected",
        "state",
        "found_center_x",
        "found_center_y",
        "found_size",
        "found_quality",
    ),
    "micrograph": (
        "foilhole_id",
        "gridsquare_id",
        "location_id",
        "setting_id",
        "unique_id",
        "acquisition_datetime",
        "defocus",
        "applied_defocus",
        "detector_name",
        "detector_commercial_name",
        "energy_filter",
        "phase_plate",
        "image_size_x",
        "image_size_y",
        "binning_x",
        "binning_y",
        "pixel_size",
        "exposure_time",
        "dose",
    ),
}
"""Fields checked when comparing a manifest with parsed files (everything the files carry)."""


class Mismatch(BaseModel):
    """One field that differs."""

    model_config = ConfigDict(frozen=True)

    kind: str
    key: Key
    field: str
    expected: Any
    observed: Any


class ManifestDiff(BaseModel):
    """Differences between a manifest and observed entities."""

    missing: dict[str, list[Key]] = Field(default_factory=dict)
    """Expected but not observed (only reported for kinds compared as complete)."""
    unexpected: dict[str, list[Key]] = Field(default_factory=dict)
    mismatches: list[Mismatch] = Field(default_factory=list)
    compared: dict[str, int] = Field(default_factory=dict)
    """Entities compared per kind."""

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or different."""
        return not any(self.missing.values()) and not any(self.unexpected.values()) and not self.mismatches

    def summary(self, limit: int = 10) -> str:
        """A short human-readable report (first ``limit`` items of each list)."""
        if self.ok:
            return "manifest matches: " + ", ".join(f"{k}={n}" for k, n in self.compared.items())
        lines = []
        for kind, keys in self.missing.items():
            if keys:
                lines.append(f"missing {kind} ({len(keys)}): {keys[:limit]}")
        for kind, keys in self.unexpected.items():
            if keys:
                lines.append(f"unexpected {kind} ({len(keys)}): {keys[:limit]}")
        for m in self.mismatches[:limit]:
            lines.append(f"{m.kind} {m.key} {m.field}: expected {m.expected!r}, observed {m.observed!r}")
        if len(self.mismatches) > limit:
            lines.append(f"... {len(self.mismatches) - limit} more mismatches")
        return "\n".join(lines)


def expected_records(manifest: Manifest, *, include_near_grid_bar: bool = True) -> Records:
    """The manifest as :data:`Records` (every manifest field; compare picks the ones it checks)."""
    records: Records = {kind: {} for kind in KINDS}
    for a in manifest.acquisitions:
        records["acquisition"][(a.acquisition_key, a.acquisition_key)] = a.model_dump()
    for g in manifest.grids:
        records["grid"][(g.acquisition_key, g.acquisition_key)] = g.model_dump()
    for atlas in manifest.atlases:
        records["atlas"][(atlas.acquisition_key, atlas.atlas_id)] = atlas.model_dump()
    for t in manifest.atlas_tiles:
        fields = t.model_dump()
        fields["gridsquares"] = _positions(
            (p.gridsquare_id, p.center_x, p.center_y, p.size_width, p.size_height) for p in t.gridsquares
        )
        records["atlas_tile"][(t.acquisition_key, t.tile_id)] = fields
    for s in manifest.gridsquares:
        records["gridsquare"][(s.acquisition_key, s.gridsquare_id)] = s.model_dump()
    for h in manifest.foilholes:
        if include_near_grid_bar or not h.is_near_grid_bar:
            records["foilhole"][(h.acquisition_key, h.foilhole_id)] = h.model_dump()
    for m in manifest.micrographs:
        records["micrograph"][(m.acquisition_key, m.micrograph_id)] = m.model_dump()
    return records


def _positions(
    items: Iterable[tuple[str, float, float, float, float]],
) -> list[tuple[str, float, float, float, float]]:
    return sorted(items)


def _same(expected: Any, observed: Any, rel_tol: float) -> bool:
    if isinstance(expected, bool) or isinstance(observed, bool):
        return bool(expected == observed)
    if isinstance(expected, int | float) and isinstance(observed, int | float):
        return math.isclose(float(expected), float(observed), rel_tol=rel_tol, abs_tol=1e-15)
    if isinstance(expected, datetime) and isinstance(observed, datetime):
        if (expected.tzinfo is None) != (observed.tzinfo is None):
            return False
        return abs((expected - observed).total_seconds()) < 1e-3
    if isinstance(expected, list | tuple) and isinstance(observed, list | tuple):
        return len(expected) == len(observed) and all(
            _same(e, o, rel_tol) for e, o in zip(expected, observed, strict=True)
        )
    return bool(expected == observed)


def compare(
    expected: Records,
    observed: Records,
    *,
    fields: Mapping[str, Iterable[str]] | None = None,
    complete: Iterable[str] = KINDS,
    rel_tol: float = 1e-9,
) -> ManifestDiff:
    """Compare records kind by kind.

    ``fields`` picks the fields to compare per kind (default: :data:`FILE_FIELDS`); a field absent from an
    observed record is skipped (the source may not carry it). Kinds in ``complete`` report missing entities;
    other kinds only check that what was observed is expected and equal (for sampled observations).
    """
    chosen = {kind: tuple(names) for kind, names in (fields or FILE_FIELDS).items()}
    complete_kinds = set(complete)
    diff = ManifestDiff()
    for kind in KINDS:
        exp = expected.get(kind, {})
        obs = observed.get(kind, {})
        if kind in complete_kinds:
            diff.missing[kind] = sorted(set(exp) - set(obs))
        diff.unexpected[kind] = sorted(set(obs) - set(exp))
        diff.compared[kind] = len(set(obs) & set(exp))
        for key in sorted(set(obs) & set(exp)):
            for name in chosen.get(kind, ()):
                if name not in obs[key]:
                    continue
                if not _same(exp[key].get(name), obs[key][name], rel_tol):
                    diff.mismatches.append(
                        Mismatch(
                            kind=kind,
                            key=key,
                            field=name,
                            expected=exp[key].get(name),
                            observed=obs[key][name],
                        )
                    )
    return diff


# ----------------------------------------------------------------------------------------------------------
# Observing a folder through converters
# ----------------------------------------------------------------------------------------------------------


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def observe_files(
    root: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None
) -> Records:
    """Parse EPU files under ``root`` (all of them, or ``files``) with ``converters``; return manifest-shaped
    records.

    Entities are keyed by the session folder relative to ``root``. Partial models are merged with
    ``converters.merge`` (newest foil-hole image wins), as the agent does. Files that fail to parse raise.
    """
    base = Path(root).resolve()
    paths = (
        sorted(Path(p) for p in files)
        if files is not None
        else sorted(p for p in base.rglob("*") if p.is_file())
    )
    sessions: list[ParsedSession] = []
    atlases: list[ParsedAtlas] = []
    squares: dict[Key, GridSquareData] = {}
    holes: dict[Key, FoilHoleData] = {}
    micrographs: dict[Key, MicrographData] = {}
    atlas_squares: list[tuple[str, GridSquareData]] = []

    def upsert(store: dict[Key, Any], key: Key, model: Any, kind: EpuFileKind) -> None:
        store[key] = merge(store[key], model, kind) if key in store else model

    for path in paths:
        info = classify_path(path)
        if info is None:
            continue
        try:
            parsed = parse_file(path, epu_path=info)
        except ConverterError as exc:
            raise ValueError(f"generated file does not parse: {path}: {exc}") from exc
        if isinstance(parsed, ParsedSession):
            sessions.append(parsed)
        elif isinstance(parsed, ParsedAtlas):
            atlases.append(parsed)
        elif isinstance(parsed, ParsedGridSquareMetadata):
            akey = _rel(parsed.gridsquare.session_root, base) or ""
            upsert(
                squares,
                (akey, parsed.gridsquare.gridsquare_id),
                parsed.gridsquare,
                EpuFileKind.GRIDSQUARE_METADATA,
            )
            for hole in parsed.foilholes:
                upsert(holes, (akey, hole.foilhole_id), hole, EpuFileKind.GRIDSQUARE_METADATA)
        elif isinstance(parsed, ParsedGridSquareImage) and parsed.gridsquare is not None:
            akey = _rel(parsed.gridsquare.session_root, base) or ""
            upsert(
                squares,
                (akey, parsed.gridsquare.gridsquare_id),
                parsed.gridsquare,
                EpuFileKind.GRIDSQUARE_IMAGE,
            )
        elif isinstance(parsed, ParsedFoilHoleImage):
            akey = _rel(parsed.foilhole.session_root or info.session_root, base) or ""
            upsert(holes, (akey, parsed.foilhole.foilhole_id), parsed.foilhole, EpuFileKind.FOILHOLE_IMAGE)
        elif isinstance(parsed, ParsedMicrograph):
            akey = _rel(parsed.micrograph.session_root, base) or ""
            upsert(
                micrographs,
                (akey, parsed.micrograph.micrograph_id),
                parsed.micrograph,
                EpuFileKind.MICROGRAPH,
            )

    records: Records = {kind: {} for kind in KINDS}
    atlas_owner: dict[str, str] = {}
    for session in sessions:
        acq, grid = session.acquisition, session.grid
        akey = _rel(acq.session_root, base) or ""
        records["acquisition"][(akey, akey)] = {
            "name": acq.name,
            "session_id": acq.session_id,
            "start_time": acq.start_time,
            "storage_path": acq.storage_path,
            "atlas_path": acq.atlas_path,
            "clustering_mode": acq.clustering_mode,
            "epu_version": acq.epu_version,
        }
        records["grid"][(akey, akey)] = {
            "name": grid.name,
            "data_dir": _rel(grid.data_dir, base),
            "atlas_dir": _rel(grid.atlas_dir, base),
            "scan_start_time": grid.scan_start_time,
        }
        if acq.atlas_local_path:
            atlas_owner[str(Path(acq.atlas_local_path).resolve())] = akey
    for parsed in atlases:
        atlas = parsed.atlas
        owner = atlas_owner.get(str(Path(atlas.atlas_path).resolve())) if atlas.atlas_path else None
        if owner is None:
            continue  # an atlas no session points to (the screening session's own) is not an entity to post
        records["atlas"][(owner, atlas.atlas_id)] = _atlas_record(atlas, base)
        for tile in atlas.tiles:
            records["atlas_tile"][(owner, tile.tile_id)] = _tile_record(tile)
        atlas_squares.extend((owner, sq) for sq in parsed.gridsquares)
    for owner, square in atlas_squares:
        upsert(squares, (owner, square.gridsquare_id), square, EpuFileKind.ATLAS)
    for key, square in squares.items():
        records["gridsquare"][key] = _square_record(square)
    for key, hole in holes.items():
        records["foilhole"][key] = _hole_record(hole)
    for key, mic in micrographs.items():
        records["micrograph"][key] = _micrograph_record(mic)
    return records


def _atlas_record(atlas: AtlasData, base: Path) -> dict[str, Any]:
    return {
        "atlas_id": atlas.atlas_id,
        "name": atlas.name,
        "description": atlas.description,
        "acquisition_date": atlas.acquisition_datetime,
        "storage_folder": atlas.storage_folder,
        "path": _rel(atlas.atlas_path, base),
        "tile_count": atlas.tile_count,
    }


def _tile_record(tile: AtlasTileData) -> dict[str, Any]:
    return {
        "atlas_id": tile.atlas_id,
        "tile_index": tile.tile_index,
        "position_x": tile.position_x_px,
        "position_y": tile.position_y_px,
        "size_x": tile.width_px,
        "size_y": tile.height_px,
        "file_format": tile.file_format,
        "base_filename": tile.base_filename,
        "gridsquares": _positions(
            (p.gridsquare_id, p.center_x_px, p.center_y_px, p.size_width_px, p.size_height_px)
            for p in tile.gridsquare_positions
        ),
    }


def _put(record: dict[str, Any], name: str, value: Any) -> None:
    """Only fields the files actually provided are compared."""
    if value is not None:
        record[name] = value


def _square_record(square: GridSquareData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    stage = square.stage_position
    image = square.image
    for name, value in (
        ("atlas_node_id", square.atlas_node_id),
        ("state", square.state),
        ("selected", square.selected),
        ("unusable", square.unusable),
        ("rotation", square.rotation_rad),
        ("stage_position_x", stage.x_m if stage else None),
        ("stage_position_y", stage.y_m if stage else None),
        ("stage_position_z", stage.z_m if stage else None),
        ("center_x", square.center_x_px),
        ("center_y", square.center_y_px),
        ("size_width", square.size_width_px),
        ("size_height", square.size_height_px),
        ("physical_x", square.physical_x_m),
        ("physical_y", square.physical_y_m),
        ("tile_id", square.tile_id),
        ("acquisition_datetime", image.acquisition_datetime if image else None),
        ("defocus", image.defocus_m if image else None),
        ("applied_defocus", image.applied_defocus_m if image else None),
        ("magnification", image.nominal_magnification if image else None),
        ("pixel_size", image.pixel_size_x_m if image else None),
        ("detector_name", image.detector_name if image else None),
        ("foilhole_count", square.foilhole_count),
    ):
        _put(record, name, value)
    return record


def _hole_record(hole: FoilHoleData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    stage = hole.stage_position
    found = hole.found_hole
    for name, value in (
        ("gridsquare_id", hole.gridsquare_id),
        ("center_x", hole.x_location_px),
        ("center_y", hole.y_location_px),
        ("size_width", hole.width_px),
        ("size_height", hole.height_px),
        ("x_stage_position", stage.x_m if stage else None),
        ("y_stage_position", stage.y_m if stage else None),
        ("quality", hole.quality),
        ("is_near_grid_bar", hole.is_near_grid_bar),
        ("selected", hole.selected),
        ("state", hole.state),
        ("found_center_x", found.center_x_px if found else None),
        ("found_center_y", found.center_y_px if found else None),
        ("found_size", found.width_px if found else None),
        ("found_quality", found.quality if found else None),
    ):
        _put(record, name, value)
    return record


def _micrograph_record(mic: MicrographData) -> dict[str, Any]:
    record: dict[str, Any] = {}
    image = mic.image
    for name, value in (
        ("foilhole_id", mic.foilhole_id),
        ("gridsquare_id", mic.gridsquare_id),
        ("location_id", mic.location_id),
        ("setting_id", mic.setting_id),
        ("unique_id", image.unique_id if image else None),
        ("acquisition_datetime", image.acquisition_datetime if image else None),
        ("defocus", image.defocus_m if image else None),
        ("applied_defocus", image.applied_defocus_m if image else None),
        ("detector_name", image.detector_name if image else None),
        ("detector_commercial_name", image.detector_commercial_name if image else None),
        ("energy_filter", image.energy_filter_on if image else None),
        ("phase_plate", image.phase_plate_used if image else None),
        ("image_size_x", image.image_width_px if image else None),
        ("image_size_y", image.image_height_px if image else None),
        ("binning_x", image.binning_x if image else None),
        ("binning_y", image.binning_y if image else None),
        ("pixel_size", image.pixel_size_x_m if image else None),
        ("exposure_time", image.exposure_time_s if image else None),
        ("dose", image.dose_e_per_m2 if image else None),
    ):
        _put(record, name, value)
    return record


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
    "FILE_FIELDS",
    "ManifestDiff",
    "Mismatch",
    "Records",
    "compare",
    "compare_with_backend",
    "compare_with_files",
    "expected_records",
    "observe_backend",
    "observe_files",
]
