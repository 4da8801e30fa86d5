"""The comparison core of :mod:`testbed.epu.compare`: :data:`Records` in manifest terms, the expected records of a
manifest, and the field-by-field comparison that yields a :class:`ManifestDiff`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
        fields["gridsquares"] = sorted_positions(
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


def sorted_positions(
    items: Iterable[tuple[str, float, float, float, float]],
) -> list[tuple[str, float, float, float, float]]:
    """Atlas-tile grid-square positions in a stable order, so that comparisons ignore file order."""
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


__all__ = [
    "FILE_FIELDS",
    "Key",
    "ManifestDiff",
    "Mismatch",
    "Records",
    "compare",
    "expected_records",
    "sorted_positions",
]
