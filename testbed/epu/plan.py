"""The deterministic plan of a synthetic EPU visit: every id, position, timestamp and file, from a seed.

A :class:`SessionPlan` is pure data; :func:`testbed.epu.planner.plan_session` builds it.
:mod:`testbed.epu.templates` renders its files,
:mod:`testbed.epu.manifest`
derives the ground-truth entities from it, and :mod:`testbed.epu.generator` schedules and writes it. Nothing
here
touches the disk. The same ``(preset, seed, grids)`` always yields the same plan, byte for byte once rendered.

Layout of a planned visit (the output folder plays the EPU storage folder, ``Z:\\<folder name>``)::

    atlas/Supervisor_<date>_<time>_<label>_atlas/          atlas screening session (one per visit)
        ScreeningSession.dm, Atlas/Atlas.dm, Sample<k>/Sample.dm, Sample<k>/Atlas/{Atlas.dm, Atlas_<id>.xml,
        Tile_*}
    Supervisor_<date>_<time>_<n>_<label>_grid<g>/          one EPU session per grid
        EpuSession.dm, Metadata/GridSquare_<id>.dm, Images-Disc1/GridSquare_<id>/{GridSquare_<ts>.xml,
        FoilHoles, Data}

Virtual time: every planned event has ``at``, seconds from the start of the atlas screening; the wall-clock
timestamps written into the files are ``base_time + at``. Cadence follows epu-format.md section 8.1:
micrographs
3-4 s apart, two foil-hole images about 10 s apart, pauses between squares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict

EPU_VERSION = "3.7.0.6930"
"""EPU release the files claim (root ``z:Assembly`` of ``.dm`` files, ``ApplicationSoftwareVersion``)."""
GRIDATLAS_VERSION = "1.34.0.6930"
TEMAPP_VERSION = "5.14.0.5305"
LOCAL_TZ = timezone(timedelta(hours=1))
"""The acquisition PC's zone: file names are local time, image timestamps carry this offset."""

INSTRUMENT_MODEL = "TITAN53000001"
INSTRUMENT_ID = "3001"
COMPUTER_NAME = "TITAN53000001"
CAMERA_NAME = "EF-CCD"
DETECTOR_COMMERCIAL_NAME = "BioQuantum K3"

ATLAS_PIXEL_M = 4.8246496662110322e-07
"""Stitched atlas pixel size (metres)."""
TILE_PIXEL_M = 1.3958681677195273e-07
TILE_ATLAS_W = 833
"""A tile's footprint on the stitched atlas, atlas pixels."""
TILE_ATLAS_H = 592
GS_PIXEL_M = 4.1556e-08
"""Grid-square image pixel size (metres)."""
FH_PIXEL_M = 1.2548310168725152e-09
MIC_PIXEL_M = 1.0558814239614023e-10
READOUT_W = 2880
READOUT_H = 2046
HOLE_SIZE_M = 2.1316745710968125e-06
HOLE_SPACING_M = 4.1280022158274845e-06
SQUARE_PITCH_PX = 176.0
"""Grid-bar pitch on the stitched atlas (85 um at the atlas pixel size), atlas pixels."""


class PresetSpec(BaseModel):
    """Size of a preset, per grid (one EPU session per grid)."""

    model_config = ConfigDict(frozen=True)

    squares: int
    """Grid squares of the grid (every one gets ``Metadata/GridSquare_<id>.dm`` and an atlas node)."""
    imaged_squares: int
    """Squares imaged at grid-square magnification (they get holes, images and micrographs)."""
    holes_per_square: int
    """Holes listed in each imaged square's ``.dm``, near-grid-bar and unimaged ones included."""
    near_grid_bar_per_square: int
    """Of those, holes flagged ``IsNearGridBar`` (never imaged, per ``RemoveHolesCloseToGridBarOn...``)."""
    unimaged_per_square: int
    """Of those, holes left ``Defined`` (not near the grid bar, not imaged)."""
    micrographs_per_hole: int
    tiles: int
    """Atlas tiles per atlas."""
    default_grids: int = 1


PRESETS: dict[str, PresetSpec] = {
    # The demo size: 1 grid, 3 imaged squares, 30 imaged holes (36 in the .dm files), 120 micrographs.
    "small": PresetSpec(
        squares=15,
        imaged_squares=3,
        holes_per_square=12,
        near_grid_bar_per_square=2,
        unimaged_per_square=0,
        micrographs_per_hole=4,
        tiles=6,
    ),
    # About 10k files.
    "medium": PresetSpec(
        squares=200,
        imaged_squares=10,
        holes_per_square=65,
        near_grid_bar_per_square=10,
        unimaged_per_square=5,
        micrographs_per_hole=8,
        tiles=35,
    ),
    # About 100k files (two grids of about 50k).
    "large": PresetSpec(
        squares=400,
        imaged_squares=25,
        holes_per_square=125,
        near_grid_bar_per_square=20,
        unimaged_per_square=5,
        micrographs_per_hole=8,
        tiles=35,
        default_grids=2,
    ),
}


@dataclass(slots=True)
class Stage:
    """A stage position: metres and radians."""

    x: float
    y: float
    z: float
    a: float = 0.0
    b: float = 0.0


@dataclass(slots=True)
class ImagePlan:
    """One ``MicroscopeImage`` XML: what differs between images of the same kind."""

    stem: str
    acquired: datetime
    unique_id: str
    core_guid: str
    stage: Stage
    pixel_size_m: float
    magnification: float
    defocus_m: float
    applied_defocus_m: float
    exposure_time_s: float
    beam_shift: tuple[float, float] = (0.0, 0.0)
    image_shift: tuple[float, float] = (0.0, 0.0)
    dose: float = 0.0
    dose_on_camera: float = 0.0
    found_center: tuple[float, float] | None = None
    found_size: float | None = None
    found_quality: float | None = None


@dataclass(slots=True)
class MicrographPlan:
    """One exposure: ``Data/FoilHole_<fh>_Data_<a>_<b>_<ts>.xml`` (+ preview)."""

    particle_id: int
    """``ParticleAcquisitions`` key in the grid-square ``.dm``."""
    area_id: int
    setting_id: int
    image: ImagePlan
    written_at: float


@dataclass(slots=True)
class FoilHolePlan:
    """A hole of an imaged square (an entry of ``TargetLocationsEfficient``)."""

    hole_id: int
    order: int
    center: tuple[float, float]
    """``PixelCenter`` in grid-square image pixels."""
    diameter_px: float
    stage: Stage
    near_grid_bar: bool
    imaged: bool
    quality: float
    intensity_mean: float
    intensity_std: float
    images: list[ImagePlan] = field(default_factory=list)
    """The two foil-hole images (before and after re-centring), oldest first; empty if not imaged."""
    image_written_at: list[float] = field(default_factory=list)
    micrographs: list[MicrographPlan] = field(default_factory=list)

    @property
    def final_state(self) -> str:
        """``State`` in the final ``.dm``."""
        return "Completed" if self.imaged else "Defined"

    @property
    def selected(self) -> bool:
        """``Selected``: holes chosen for acquisition (never the near-grid-bar ones)."""
        return not self.near_grid_bar


@dataclass(slots=True)
class TilePosition:
    """A square's placement on one tile (``TilePositionXml``), tile pixels."""

    position_id: int
    tile_id: int
    center: tuple[float, float]
    size: tuple[float, float]


@dataclass(slots=True)
class GridSquarePlan:
    """A grid square: ``Metadata/GridSquare_<id>.dm``, its atlas node and, if imaged, its image folder."""

    square_id: int
    order: int
    stage: Stage
    aligned_stage: Stage
    rotation: float
    atlas_center: tuple[float, float]
    """Centre on the stitched atlas, atlas pixels."""
    atlas_size: tuple[float, float]
    physical: tuple[float, float, float, float]
    """Physical extent (x, y, width, height), metres."""
    atlas_rotation: float
    atlas_quality: float
    category: int
    features: list[float]
    tile_id: int
    tile_positions: list[TilePosition]
    selected: bool
    imaged: bool
    image: ImagePlan | None = None
    image_written_at: float = 0.0
    holes_found_at: float = 0.0
    """When the ``.dm`` is rewritten with the holes found (imaged squares)."""
    finished_at: float = 0.0
    """When the final ``.dm`` is written (imaged squares)."""
    collection_id: int = 0
    """Id of the ``FoilHoleCollectionXml`` (``TargetLocations``)."""
    holes: list[FoilHolePlan] = field(default_factory=list)
    outline: list[tuple[float, float]] = field(default_factory=list)

    @property
    def final_state(self) -> str:
        """``State`` in the final ``.dm``."""
        return "Completed" if self.imaged else "Defined"


@dataclass(slots=True)
class TilePlan:
    """An atlas tile (``TileXml`` + ``Tile_<id>_<n>_<atlasId>.xml``)."""

    tile_id: int
    index: int
    atlas_position: tuple[int, int, int, int]
    """Placement in the stitched atlas (x, y, width, height), atlas pixels."""
    stage: Stage
    image: ImagePlan
    written_at: float
    square_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TemplateArea:
    """A shot position of the acquisition template (``DataAcquisitionAreas`` entry)."""

    area_id: int
    setting_id: int
    shift: tuple[float, float]
    beam_shift: tuple[float, float]


@dataclass(slots=True)
class AtlasPlan:
    """The atlas of one grid: ``Sample<k>/Atlas/Atlas.dm`` and its images."""

    atlas_id: int
    slot: int
    sample_id: int
    sample_name: str
    started: datetime
    acquired: datetime
    storage_folder_windows: str
    rel_dir: str
    """``atlas/<screening>/Sample<k>/Atlas`` relative to the output folder (POSIX)."""
    tiles: list[TilePlan]
    image: ImagePlan
    image_written_at: float
    written_at: float
    sample_written_at: float
    alignment_tile_id: int
    alignment_rotation: float

    @property
    def rel_path(self) -> str:
        """``Atlas.dm`` relative to the output folder."""
        return f"{self.rel_dir}/Atlas.dm"


@dataclass(slots=True)
class GridPlan:
    """One grid = one EPU session folder (``EpuSession.dm``) = one acquisition in SmartEM terms."""

    index: int
    session_id: int
    session_name: str
    """Folder name and ``EpuSession.dm`` ``Name``."""
    sample_xml_id: int
    storage_folder_id: int
    misc_ids: list[int]
    """Ids of nested EPU objects (filter settings, template, autofocus area)."""
    started: datetime
    ended: datetime
    atlas: AtlasPlan
    atlas_windows_path: str
    areas: list[TemplateArea]
    defocus_values: list[float]
    squares: list[GridSquarePlan]
    session_written_at: list[float]
    """Times at which ``EpuSession.dm`` is (re)written; the last one carries ``EndDateTime``."""
    metadata_written_at: float

    @property
    def rel_dir(self) -> str:
        """The session folder relative to the output folder (the acquisition key if that is the root)."""
        return self.session_name


@dataclass(slots=True)
class ScreeningPlan:
    """The atlas screening session of the visit."""

    screening_id: int
    atlas_session_id: int
    samples_id: int
    name: str
    started: datetime
    storage_folder_windows: str
    root_atlas_id: int

    @property
    def rel_dir(self) -> str:
        """``atlas/<name>`` relative to the output folder."""
        return f"atlas/{self.name}"


@dataclass(slots=True)
class SessionPlan:
    """A whole synthetic visit."""

    preset: str
    seed: int
    spec: PresetSpec
    storage_windows: str
    """The visit's storage folder as EPU writes it (``Z:\\<output folder name>``)."""
    base_time: datetime
    screening: ScreeningPlan
    grids: list[GridPlan]


__all__ = [
    "CAMERA_NAME",
    "COMPUTER_NAME",
    "DETECTOR_COMMERCIAL_NAME",
    "EPU_VERSION",
    "INSTRUMENT_ID",
    "INSTRUMENT_MODEL",
    "PRESETS",
    "AtlasPlan",
    "FoilHolePlan",
    "GridPlan",
    "GridSquarePlan",
    "ImagePlan",
    "MicrographPlan",
    "PresetSpec",
    "ScreeningPlan",
    "SessionPlan",
    "Stage",
    "TemplateArea",
    "TilePlan",
    "TilePosition",
]
