"""Domain models: what the EPU files say, in one unit convention, before any backend concerns.

Unit convention (all models): SI base units, with the unit as a field-name suffix.

* ``_m`` metres (stage X/Y/Z, pixel size, defocus, hole size, physical extents), ``_rad`` radians (stage
  alpha/beta, rotations), ``_s`` seconds, ``_v`` volts, ``_ev`` electronvolts (energy-filter slit width, as
  EPU writes it), ``_px`` pixels of the image named in the field's docstring, ``dose_e_per_m2`` electrons per
  square metre (as EPU writes it; :attr:`ImageMetadata.dose_e_per_a2` gives e-/A^2), ``_e_per_px`` electrons
  per image pixel.
* Dimensionless values (magnification, quality, beam/image shift in EPU's device units) carry no suffix.
* Datetimes are timezone-aware when EPU wrote a zone; file-name timestamps (local time, no zone) are naive.

Identity: every entity model carries its EPU natural id and its parent's natural id(s) so that the agent can
link files that arrive in any order. Natural ids are strings (EPU's integer ids as written; a micrograph's is
its file stem). ``session_root`` (the EPU session folder, as a local path string) is the natural key of the
acquisition and its grid; the atlas is keyed by the local path of its ``Atlas.dm`` (``atlas_path``). Each
entity model also has ``uuid`` and parent-uuid fields that the agent fills (deterministic uuid5) before
calling ``EntityConverter``.

Models produced from one file kind hold ``None`` in fields that other kinds provide; ``converters.merge``
lists the fields each kind provides and merges partial models (newest foil-hole image wins without losing
``.dm`` fields).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    """Base of the domain models: unknown fields are a bug, assignment is allowed (the agent sets uuids)."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------------------
# Value objects
# ------------------------------------------------------------------------------------------------------------


class StagePosition(_Model):
    """A stage position: X/Y/Z in metres, alpha/beta tilt in radians (any may be missing in old files)."""

    x_m: float | None = None
    y_m: float | None = None
    z_m: float | None = None
    alpha_rad: float | None = None
    beta_rad: float | None = None


class Vector2(_Model):
    """A 2-vector in EPU's device units (beam shift, image shift, beam tilt)."""

    x: float
    y: float


class FoundHole(_Model):
    """``FindFoilHoleCenterResults`` of a foil-hole image: the hole EPU found, in that image's pixels."""

    center_x_px: float | None = None
    center_y_px: float | None = None
    width_px: float | None = None
    height_px: float | None = None
    quality: float | None = None
    rotation_rad: float | None = None
    shear: float | None = None


class Fractionation(_Model):
    """Dose fractionation of a movie (``CameraSpecificInput`` ``FractionationSettings``).

    ``kind`` is ``"equidistant"``, ``"varidistant"``, ``"eer"`` or the raw type name for unknown kinds.
    ``number_of_fractions`` is ``NumberOffractions`` (equidistant), the number of ``DoseFractions``
    (varidistant), or ``None`` for EER (the count depends on the frame rate:
    :attr:`ImageMetadata.eer_fraction_count`).
    """

    kind: str
    number_of_fractions: int | None = None


class ImageMetadata(_Model):
    """Everything a ``MicroscopeImage`` XML says (grid-square, foil-hole, micrograph, atlas, tile images)."""

    unique_id: str | None = None
    """``uniqueID`` GUID of the image."""
    acquisition_datetime: datetime | None = None
    pixel_size_x_m: float | None = None
    """Pixel size of the recorded image (binning applied), metres."""
    pixel_size_y_m: float | None = None
    image_width_px: int | None = None
    """Recorded image width (``ReadoutArea`` width), pixels."""
    image_height_px: int | None = None
    binning_x: int | None = None
    binning_y: int | None = None
    detector_name: str | None = None
    """Camera name (``EF-CCD``, ``BM-Falcon``)."""
    detector_commercial_name: str | None = None
    """Commercial detector name (``BioQuantum K3``); absent in EPU <= 2.6."""
    exposure_time_s: float | None = None
    defocus_m: float | None = None
    """Actual objective defocus (``optics/Defocus``), metres."""
    applied_defocus_m: float | None = None
    """Target defocus set by EPU (``CustomData`` ``AppliedDefocus``), metres."""
    dose_e_per_m2: float | None = None
    """Total dose (``CustomData`` ``Dose``), electrons per square metre."""
    dose_on_camera_e_per_px: float | None = None
    """``CustomData`` ``DoseOnCamera``, electrons per image pixel."""
    dose_rate: float | None = None
    """``CustomData`` ``DoseRate`` as written (electrons per pixel per second)."""
    stage_position: StagePosition | None = None
    beam_shift: Vector2 | None = None
    image_shift: Vector2 | None = None
    beam_tilt: Vector2 | None = None
    nominal_magnification: float | None = None
    spot_index: int | None = None
    probe_mode: str | None = None
    acceleration_voltage_v: float | None = None
    instrument_model: str | None = None
    instrument_id: str | None = None
    computer_name: str | None = None
    software_name: str | None = None
    """``core/ApplicationSoftware`` (``EPU``, ``TemAppCommon``)."""
    software_version: str | None = None
    """``core/ApplicationSoftwareVersion``: the real software version (``3.7.0.6930``)."""
    energy_filter_on: bool | None = None
    """``optics/EFTEMOn``."""
    energy_selection_slit_inserted: bool | None = None
    energy_selection_slit_width_ev: float | None = None
    phase_plate_used: bool | None = None
    electron_counting: bool | None = None
    super_resolution_factor: int | None = None
    fractionation: Fractionation | None = None
    frame_rate_hz: float | None = None
    """EER frame rate (``Detectors[...].FrameRate``) when written."""
    found_hole: FoundHole | None = None
    """Foil-hole images only: the hole EPU found in the image."""
    custom_data: dict[str, str] = {}
    """Scalar ``CustomData`` entries, text as written (keys and types differ by version and camera)."""

    @property
    def dose_e_per_a2(self) -> float | None:
        """Total dose in electrons per square angstrom (``Dose`` x 1e-20)."""
        return None if self.dose_e_per_m2 is None else self.dose_e_per_m2 * 1e-20

    @property
    def pixel_size_a(self) -> float | None:
        """Pixel size (x) in angstroms, for display."""
        return None if self.pixel_size_x_m is None else self.pixel_size_x_m * 1e10

    @property
    def eer_fraction_count(self) -> int | None:
        """EER: frames recorded (frame rate x exposure time), as MDCatch computes it; ``None`` if unknown."""
        if self.frame_rate_hz is None or self.exposure_time_s is None:
            return None
        return round(self.frame_rate_hz * self.exposure_time_s)

    @property
    def number_of_fractions(self) -> int | None:
        """Fraction count: from the fractionation settings, or frames for EER."""
        if self.fractionation is not None and self.fractionation.number_of_fractions is not None:
            return self.fractionation.number_of_fractions
        if self.fractionation is not None and self.fractionation.kind == "eer":
            return self.eer_fraction_count
        return None


# ------------------------------------------------------------------------------------------------------------
# Entities
# ------------------------------------------------------------------------------------------------------------


class AcquisitionTemplateArea(_Model):
    """One shot position of the acquisition template (``DataAcquisitionAreas`` of ``EpuSession.dm``)."""

    area_id: str
    """``DataAcquisitionAreaId``: the ``<a>`` field of micrograph names."""
    setting_ids: list[str] = []
    defocus_values_m: list[float] = []
    exposure_time_s: float | None = None


class AcquisitionData(_Model):
    """An EPU session (``EpuSession.dm``); natural key: ``session_root``; EPU id: ``session_id``."""

    session_id: str
    """EPU's session id (``Id``, first child of the root)."""
    session_root: str | None = None
    """Local path of the session folder (the folder holding ``EpuSession.dm``)."""
    name: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    epu_version: str | None = None
    """Real EPU version from the root ``z:Assembly`` (not the file-format ``Version``)."""
    storage_path: str | None = None
    """``StorageFolders/.../Path`` as written (Windows path)."""
    atlas_path: str | None = None
    """``AtlasId`` as written (Windows path of the atlas ``Atlas.dm``)."""
    atlas_local_path: str | None = None
    """``atlas_path`` mapped to a local path (path map or sibling ``atlas/`` search), when found."""
    clustering_mode: str | None = None
    clustering_radius_m: float | None = None
    image_file_format: str | None = None
    dose_fractions_output_format: str | None = None
    autoloader_slot: int | None = None
    autoloader_description: str | None = None
    grid_type: str | None = None
    grid_geometry: str | None = None
    hole_size_m: float | None = None
    hole_spacing_m: float | None = None
    sample_start_time: datetime | None = None
    sample_end_time: datetime | None = None
    template_pixel_size_m: float | None = None
    template_areas: list[AcquisitionTemplateArea] = []
    gridsquare_ids: list[str] = []
    """Every grid square listed by the session (acquired or not)."""
    instrument_model: str | None = None
    """Not in ``EpuSession.dm``; filled by the agent from any image XML."""
    instrument_id: str | None = None
    computer_name: str | None = None
    uuid: str | None = None


class GridData(_Model):
    """The grid of an EPU session (one per ``EpuSession.dm``); natural key: ``session_root``."""

    session_id: str
    """Parent acquisition's EPU id (also this grid's natural id)."""
    session_root: str | None = None
    name: str
    """The EPU session name."""
    data_dir: str | None = None
    """Local session folder."""
    atlas_dir: str | None = None
    """Local folder of the atlas ``Atlas.dm`` when located, else the Windows folder as written."""
    atlas_path: str | None = None
    """Windows path of the atlas as written (``AtlasId``)."""
    atlas_local_path: str | None = None
    scan_start_time: datetime | None = None
    scan_end_time: datetime | None = None
    uuid: str | None = None
    acquisition_uuid: str | None = None


class AtlasTileGridSquarePositionData(_Model):
    """A grid square placed on an atlas tile (one ``Nodes`` entry of a ``TileXml``)."""

    tile_id: str
    gridsquare_id: str
    atlas_id: str
    center_x_px: float
    """Square centre on the stitched atlas (``PositionOnTheAtlas/Center``), atlas pixels."""
    center_y_px: float
    size_width_px: float
    """Square size on the stitched atlas, atlas pixels."""
    size_height_px: float
    tile_center_x_px: float | None = None
    """Square centre within the tile image (``TilePositions`` entry of this tile), tile pixels."""
    tile_center_y_px: float | None = None
    tile_size_width_px: float | None = None
    tile_size_height_px: float | None = None
    tile_uuid: str | None = None
    gridsquare_uuid: str | None = None


class AtlasTileData(_Model):
    """One atlas tile (``TileXml`` of ``Atlas.dm``, optionally enriched by its ``Tile_*.xml``)."""

    tile_id: str
    atlas_id: str
    """Parent atlas's EPU id."""
    atlas_path: str | None = None
    """Local path of the parent ``Atlas.dm`` (the atlas's natural key)."""
    position_x_px: int | None = None
    """Tile placement in the stitched atlas (``AtlasPixelPosition``), atlas pixels."""
    position_y_px: int | None = None
    width_px: int | None = None
    height_px: int | None = None
    stage_position: StagePosition | None = None
    base_filename: str | None = None
    file_format: str | None = None
    tile_index: int | None = None
    """``<n>`` of ``Tile_<tileId>_<n>_<atlasId>``."""
    gridsquare_positions: list[AtlasTileGridSquarePositionData] = []
    image: ImageMetadata | None = None
    uuid: str | None = None
    atlas_uuid: str | None = None


class AtlasData(_Model):
    """An atlas (``Atlas.dm``, ``AtlasSessionXml``); natural key: ``atlas_path`` (its local path)."""

    atlas_id: str
    """EPU id (root ``Id``)."""
    atlas_path: str | None = None
    name: str
    description: str | None = None
    start_time: datetime | None = None
    acquisition_datetime: datetime | None = None
    storage_folder: str | None = None
    image_base_filename: str | None = None
    """Stitched atlas image base name (``Atlas_<id>``)."""
    image_file_format: str | None = None
    gridatlas_version: str | None = None
    """GridAtlas persistence version from the root ``z:Assembly`` (dates the EPU release by build number)."""
    alignment_rotation_rad: float | None = None
    tile_count: int = 0
    tiles: list[AtlasTileData] = []
    uuid: str | None = None
    grid_uuid: str | None = None


class GridSquareData(_Model):
    """A grid square, merged from three sources (see ``converters.merge``).

    * ``Metadata/GridSquare_<id>.dm``: state, selection, stage position, outline, image reference, hole count.
    * The atlas node: centre/size on the atlas (atlas pixels), physical extent (metres), atlas stage
      positions.
    * The grid-square image XML: acquisition time, defocus, magnification, pixel size, detector (``image``).
    """

    gridsquare_id: str
    session_root: str | None = None
    """Parent session folder (the grid's natural key); ``None`` when the file is outside a session layout."""
    atlas_node_id: int | None = None
    state: str | None = None
    selected: bool | None = None
    unusable: bool | None = None
    order: int | None = None
    rotation_rad: float | None = None
    stage_position: StagePosition | None = None
    hole_spacing_m: float | None = None
    image_base_filename: str | None = None
    """``Image/BaseFileName`` of the ``.dm`` (``GridSquare_<ts>``)."""
    image_path: str | None = None
    """``GridSquareImagePath`` as written (Windows path), or the local image XML path."""
    outline_center_x_px: float | None = None
    """``GridSquareShape`` centre in grid-square image pixels."""
    outline_center_y_px: float | None = None
    outline_vertices_px: list[tuple[float, float]] = []
    foilhole_count: int | None = None
    # atlas node
    atlas_id: str | None = None
    tile_id: str | None = None
    center_x_px: float | None = None
    """Centre on the stitched atlas, atlas pixels."""
    center_y_px: float | None = None
    size_width_px: float | None = None
    size_height_px: float | None = None
    physical_x_m: float | None = None
    physical_y_m: float | None = None
    physical_width_m: float | None = None
    physical_height_m: float | None = None
    atlas_rotation_rad: float | None = None
    atlas_quality: float | None = None
    atlas_category: str | None = None
    atlas_stage_position: StagePosition | None = None
    aligned_stage_position: StagePosition | None = None
    # grid-square image
    image: ImageMetadata | None = None
    image_timestamp: datetime | None = None
    """Local time from the image file name."""
    uuid: str | None = None
    grid_uuid: str | None = None


class FoilHoleData(_Model):
    """A foil hole, merged from the grid-square ``.dm`` and its (usually two) foil-hole image XMLs.

    ``.dm`` fields (never overwritten by an image): ``x_location_px``, ``y_location_px``, ``diameter_px``,
    ``width_px``/``height_px``, ``stage_position``, ``is_near_grid_bar``, ``selected``, ``state``,
    ``quality``. Image fields (newest image wins): ``found_hole``, ``image_stage_position``, ``image``,
    ``image_timestamp``.
    """

    foilhole_id: str
    gridsquare_id: str | None
    """Parent grid square's EPU id (``None`` for a hole image outside a ``GridSquare_<id>`` folder)."""
    session_root: str | None = None
    x_location_px: float | None = None
    """``PixelCenter`` x, grid-square image pixels."""
    y_location_px: float | None = None
    width_px: float | None = None
    """``PixelWidthHeight`` width (the hole diameter), grid-square image pixels."""
    height_px: float | None = None
    stage_position: StagePosition | None = None
    """Hole stage position from the ``.dm``."""
    is_near_grid_bar: bool | None = None
    selected: bool | None = None
    state: str | None = None
    quality: float | None = None
    rotation_rad: float | None = None
    image_base_filename: str | None = None
    """Latest hole image named by the ``.dm``."""
    micrograph_ids: list[str] = []
    """Micrograph file stems listed by the ``.dm`` (``ParticleAcquisitions``)."""
    # foil-hole image
    found_hole: FoundHole | None = None
    image_stage_position: StagePosition | None = None
    image: ImageMetadata | None = None
    image_timestamp: datetime | None = None
    """Local time from the foil-hole image file name: the newest image wins."""
    image_path: str | None = None
    uuid: str | None = None
    gridsquare_uuid: str | None = None

    @property
    def diameter_px(self) -> float | None:
        """Hole diameter in grid-square image pixels (``PixelWidthHeight`` width)."""
        return self.width_px


class FractionsData(_Model):
    """Camera-written ``*_Fractions.xml`` summary."""

    detector: str | None = None
    acquisition_id: str | None = None
    acquisition_datetime: datetime | None = None
    file_version: str | None = None
    expected_fractions: int | None = None
    recorded_fractions: int | None = None
    frame_count: int | None = None
    """Sum of ``NumberOfFrames`` over fractions."""
    fraction_count: int = 0
    """Number of ``Fraction`` elements."""
    width_px: int | None = None
    height_px: int | None = None
    binning: int | None = None
    electron_counting: bool | None = None
    format: str | None = None


class MicrographData(_Model):
    """One exposure (``Data/FoilHole_<fh>_Data_<a>_<b>_<ts>.xml``); natural id: the file stem."""

    micrograph_id: str
    """File stem, e.g. ``FoilHole_9015883_Data_9017347_6_20250108_154915``."""
    foilhole_id: str
    gridsquare_id: str | None = None
    """From the ``GridSquare_<id>`` folder; ``None`` outside a session layout."""
    session_root: str | None = None
    location_id: str | None = None
    """``<a>``: ``DataAcquisitionAreaId`` (template shot position)."""
    setting_id: str | None = None
    """``<b>``: ``ImageAcquisitionSettingId`` (EPU 2.x-3.8), a small integer in 3.9.1; opaque."""
    name_timestamp: datetime | None = None
    """Local time from the file name."""
    manifest_file: str | None = None
    """Local path of the XML."""
    high_res_path: str | None = None
    """Local path of the movie, when known."""
    image: ImageMetadata | None = None
    fractions: FractionsData | None = None
    uuid: str | None = None
    foilhole_uuid: str | None = None


class SampleData(_Model):
    """An atlas-screening cassette slot (``Sample<k>/Sample.dm``)."""

    sample_id: str
    name: str | None = None
    slot_id: int | None = None
    atlas_acquisition_status: str | None = None
    acquired_atlas_available: bool | None = None
    specimen_carrier_type: str | None = None
    storage_folder: str | None = None
    atlas_path: str | None = None
    """Local path of ``Atlas/Atlas.dm`` next to this ``Sample.dm`` (whether or not it exists yet)."""


class ScreeningSessionData(_Model):
    """An atlas screening session (``ScreeningSession.dm``)."""

    screening_id: str
    name: str | None = None
    start_time: datetime | None = None
    storage_folder: str | None = None
    samples: dict[int, str] = {}
    """Slot index -> ``Sample.dm`` file name as written."""
    atlas: AtlasData | None = None
    """The embedded ``AtlasSession`` (no tiles)."""


__all__ = [
    "AcquisitionData",
    "AcquisitionTemplateArea",
    "AtlasData",
    "AtlasTileData",
    "AtlasTileGridSquarePositionData",
    "FoilHoleData",
    "FoundHole",
    "Fractionation",
    "FractionsData",
    "GridData",
    "GridSquareData",
    "ImageMetadata",
    "MicrographData",
    "SampleData",
    "ScreeningSessionData",
    "StagePosition",
    "Vector2",
]
