"""Ground-truth manifest of a generated EPU visit: the entities a correct agent must post, and their key
values.

The manifest is derived from the :class:`~testbed.epu.plan.SessionPlan`, not from the written files, so tests
can
check that parsing the files (``converters``) and ingesting them (the agent) reproduce it exactly.

Conventions (docs/architecture.md, "Identity"):

* ``acquisition_key`` is the EPU session folder relative to the watch root (POSIX); when the agent watches the
  generator's output folder that is the session folder name. One acquisition and one grid per
  ``EpuSession.dm``.
* Natural ids are EPU's, as strings; a micrograph's is its file stem.
* Values are in SmartEM request units: metres for stage positions, pixel sizes and defocus; pixels for
positions
  on images; timezone-aware datetimes (truncated to microseconds, as Python parses EPU's 7-digit fractions).

Foil holes include the near-grid-bar ones (``is_near_grid_bar=True``) because they are in the ``.dm`` files;
:meth:`Manifest.expected_counts` applies SmartEM's filter on request.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"
"""File name of the manifest, written in the generator's output folder."""

KINDS = ("acquisition", "grid", "atlas", "atlas_tile", "gridsquare", "foilhole", "micrograph")
"""Entity kinds, in the vocabulary of the identity scheme."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestAcquisition(_Entry):
    """One EPU session (``EpuSession.dm``)."""

    acquisition_key: str
    session_id: str
    """EPU's session id (not sent to SmartEM)."""
    name: str
    start_time: datetime
    end_time: datetime
    storage_path: str
    """``StorageFolders`` path as written (Windows)."""
    atlas_path: str
    """``AtlasId`` as written (Windows)."""
    clustering_mode: str
    clustering_radius_m: float
    instrument_model: str
    instrument_id: str
    computer_name: str
    epu_version: str
    session_dir: str
    """Session folder relative to the output folder (POSIX)."""


class ManifestGrid(_Entry):
    """The grid of an EPU session."""

    acquisition_key: str
    name: str
    """EPU session name (``GridCreateRequest.name``)."""
    data_dir: str
    """Session folder relative to the output folder."""
    atlas_dir: str
    """Folder of the grid's ``Atlas.dm`` relative to the output folder."""
    scan_start_time: datetime
    scan_end_time: datetime


class ManifestTileSquarePosition(_Entry):
    """A grid square placed on an atlas tile; centre and size on the stitched atlas (atlas pixels)."""

    gridsquare_id: str
    center_x: float
    center_y: float
    size_width: float
    size_height: float


class ManifestAtlasTile(_Entry):
    """An atlas tile with the squares lying on it."""

    acquisition_key: str
    atlas_id: str
    tile_id: str
    tile_index: int
    position_x: int
    position_y: int
    size_x: int
    size_y: int
    file_format: str
    base_filename: str
    gridsquares: list[ManifestTileSquarePosition]


class ManifestAtlas(_Entry):
    """The atlas of a grid (``Sample<k>/Atlas/Atlas.dm``)."""

    acquisition_key: str
    atlas_id: str
    name: str
    description: str
    acquisition_date: datetime
    start_time: datetime
    storage_folder: str
    path: str
    """``Atlas.dm`` relative to the output folder."""
    tile_count: int


class ManifestGridSquare(_Entry):
    """A grid square (every square in ``Metadata/``), with atlas placement and, if imaged, image values."""

    acquisition_key: str
    gridsquare_id: str
    atlas_node_id: int
    state: str
    """``State`` of the final ``.dm``."""
    selected: bool
    unusable: bool
    rotation: float
    stage_position_x: float
    stage_position_y: float
    stage_position_z: float
    center_x: float
    """Centre on the stitched atlas, atlas pixels (SmartEM sends it rounded to int)."""
    center_y: float
    size_width: float
    size_height: float
    physical_x: float
    physical_y: float
    tile_id: str
    imaged: bool
    image_path: str | None = None
    """Grid-square image XML relative to the output folder (imaged squares)."""
    acquisition_datetime: datetime | None = None
    defocus: float | None = None
    applied_defocus: float | None = None
    magnification: float | None = None
    pixel_size: float | None = None
    detector_name: str | None = None
    foilhole_count: int = 0


class ManifestFoilHole(_Entry):
    """A foil hole listed in a grid-square ``.dm`` (values of the final ``.dm``)."""

    acquisition_key: str
    foilhole_id: str
    gridsquare_id: str
    center_x: float
    """``PixelCenter`` x, grid-square image pixels."""
    center_y: float
    size_width: float
    """``PixelWidthHeight`` width (the diameter), grid-square image pixels."""
    size_height: float
    x_stage_position: float
    y_stage_position: float
    quality: float
    rotation: float
    is_near_grid_bar: bool
    selected: bool
    state: str
    imaged: bool
    image_paths: list[str] = Field(default_factory=list)
    """Foil-hole image XMLs (oldest first) relative to the output folder; the ``.dm`` names the newest."""
    found_center_x: float | None = None
    """``FindFoilHoleCenterResults`` of the newest image, foil-hole image pixels."""
    found_center_y: float | None = None
    found_size: float | None = None
    found_quality: float | None = None


class ManifestMicrograph(_Entry):
    """One exposure; natural id: its file stem."""

    acquisition_key: str
    micrograph_id: str
    foilhole_id: str
    gridsquare_id: str
    location_id: str
    """``<a>`` of the name: ``DataAcquisitionAreaId``."""
    setting_id: str
    unique_id: str
    """EPU ``uniqueID`` (never sent to SmartEM)."""
    path: str
    """Micrograph XML relative to the output folder."""
    acquisition_datetime: datetime
    defocus: float
    applied_defocus: float
    detector_name: str
    detector_commercial_name: str
    energy_filter: bool
    phase_plate: bool
    image_size_x: int
    image_size_y: int
    binning_x: int
    binning_y: int
    pixel_size: float
    exposure_time: float
    dose: float
    """``CustomData`` ``Dose``, e-/m^2."""


class ManifestCounts(_Entry):
    """Entity counts by kind."""

    acquisition: int
    grid: int
    atlas: int
    atlas_tile: int
    gridsquare: int
    foilhole: int
    micrograph: int

    def as_dict(self) -> dict[str, int]:
        """Counts keyed by kind, in :data:`KINDS` order."""
        return {kind: getattr(self, kind) for kind in KINDS}


class Manifest(BaseModel):
    """Everything a generated visit contains. Written as ``<out>/manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    preset: str
    seed: int
    grids_count: int
    storage_path: str
    """The visit's Windows storage folder as written into the files."""
    files: dict[str, int] = Field(default_factory=dict)
    """Final number of files by kind (``session``, ``gridsquare_metadata``, ..., ``jpg``)."""
    total_files: int = 0
    acquisitions: list[ManifestAcquisition] = Field(default_factory=list)
    grids: list[ManifestGrid] = Field(default_factory=list)
    atlases: list[ManifestAtlas] = Field(default_factory=list)
    atlas_tiles: list[ManifestAtlasTile] = Field(default_factory=list)
    gridsquares: list[ManifestGridSquare] = Field(default_factory=list)
    foilholes: list[ManifestFoilHole] = Field(default_factory=list)
    micrographs: list[ManifestMicrograph] = Field(default_factory=list)

    def expected_counts(self, *, include_near_grid_bar: bool = True) -> ManifestCounts:
        """Entity counts; ``include_near_grid_bar=False`` applies SmartEM's near-grid-bar foil-hole filter."""
        holes = [h for h in self.foilholes if include_near_grid_bar or not h.is_near_grid_bar]
        return ManifestCounts(
            acquisition=len(self.acquisitions),
            grid=len(self.grids),
            atlas=len(self.atlases),
            atlas_tile=len(self.atlas_tiles),
            gridsquare=len(self.gridsquares),
            foilhole=len(holes),
            micrograph=len(self.micrographs),
        )

    def natural_keys(self, *, include_near_grid_bar: bool = True) -> dict[str, set[tuple[str, str]]]:
        """``{kind: {(acquisition_key, natural_id)}}``: the identities a correct agent posts.

        The natural id of an acquisition and of a grid is the acquisition key itself; of an atlas its EPU id.
        """
        return {
            "acquisition": {(a.acquisition_key, a.acquisition_key) for a in self.acquisitions},
            "grid": {(g.acquisition_key, g.acquisition_key) for g in self.grids},
            "atlas": {(a.acquisition_key, a.atlas_id) for a in self.atlases},
            "atlas_tile": {(t.acquisition_key, t.tile_id) for t in self.atlas_tiles},
            "gridsquare": {(s.acquisition_key, s.gridsquare_id) for s in self.gridsquares},
            "foilhole": {
                (h.acquisition_key, h.foilhole_id)
                for h in self.foilholes
                if include_near_grid_bar or not h.is_near_grid_bar
            },
            "micrograph": {(m.acquisition_key, m.micrograph_id) for m in self.micrographs},
        }

    def acquisition_keys(self) -> list[str]:
        """Acquisition keys in session order."""
        return [a.acquisition_key for a in self.acquisitions]

    def with_root_prefix(self, prefix: str) -> Manifest:
        """A copy with acquisition keys ``<prefix>/<key>``, for an agent watching a parent folder."""
        prefix = prefix.strip("/")
        if not prefix:
            return self.model_copy(deep=True)
        data = self.model_dump(mode="json")
        for kind in (
            "acquisitions",
            "grids",
            "atlases",
            "atlas_tiles",
            "gridsquares",
            "foilholes",
            "micrographs",
        ):
            for entry in data[kind]:
                entry["acquisition_key"] = f"{prefix}/{entry['acquisition_key']}"
        return Manifest.model_validate(data)

    # -- persistence ----------------------------------------------------------------------------------------

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest atomically (temporary file + rename) so that readers never see half of it."""
        target = Path(path)
        if target.is_dir():
            target = target / MANIFEST_NAME
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest file (or ``<dir>/manifest.json``)."""
        source = Path(path)
        if source.is_dir():
            source = source / MANIFEST_NAME
        try:
            return cls.model_validate(json.loads(source.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise FileNotFoundError(f"no EPU testbed manifest at {source}") from None


__all__ = [
    "KINDS",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestAcquisition",
    "ManifestAtlas",
    "ManifestAtlasTile",
    "ManifestCounts",
    "ManifestFoilHole",
    "ManifestGrid",
    "ManifestGridSquare",
    "ManifestMicrograph",
    "ManifestTileSquarePosition",
]
