"""Parse any EPU file into typed results: ``parse_file(path) -> ParsedFile``.

One result type per :class:`~converters.paths.EpuFileKind`; each carries the path, its :class:`EpuPath`, the
domain models it yields (``entities()``), and ``warnings`` for recoverable oddities (a node without a centre,
the lacey-grid fallback). Failures are :mod:`converters.errors` exceptions only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from converters._xml import (
    DEFAULT_MAX_BYTES,
    I_NIL_KEY,
    I_TYPE_KEY,
    NS_AA,
    NS_ARR,
    NS_DRAW,
    NS_EPU,
    NS_EPU_OLD,
    NS_FT,
    NS_GA,
    NS_GAD,
    NS_OMP,
    NS_SAT,
    NS_SCR,
    NS_SO,
    NS_T,
    Element,
    Reader,
    assembly_version,
    children,
    load_bytes,
    local_name,
    mentions_ref,
    parse_xml,
    q,
)
from converters.errors import MalformedFileError, UnknownFileError
from converters.models import (
    AcquisitionData,
    AcquisitionTemplateArea,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    FractionsData,
    GridData,
    GridSquareData,
    ImageMetadata,
    MicrographData,
    SampleData,
    ScreeningSessionData,
)
from converters.paths import (
    _MICROGRAPH_STEM_RE,
    EpuFileKind,
    EpuPath,
    PathMap,
    classify_path,
    locate_atlas,
)

# ------------------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------------------


class _Parsed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    epu_path: EpuPath
    warnings: list[str] = []

    def entities(self) -> list[BaseModel]:
        """The domain models this file yields, parents first."""
        raise NotImplementedError  # every concrete result overrides this


class ParsedSession(_Parsed):
    """``EpuSession.dm``: the acquisition and its grid (one grid per session)."""

    kind: Literal[EpuFileKind.SESSION] = EpuFileKind.SESSION
    acquisition: AcquisitionData
    grid: GridData

    def entities(self) -> list[BaseModel]:
        """Acquisition, then grid."""
        return [self.acquisition, self.grid]


class ParsedGridSquareMetadata(_Parsed):
    """``Metadata/GridSquare_<id>.dm``: the square and every foil hole on it."""

    kind: Literal[EpuFileKind.GRIDSQUARE_METADATA] = EpuFileKind.GRIDSQUARE_METADATA
    gridsquare: GridSquareData
    foilholes: list[FoilHoleData]

    def entities(self) -> list[BaseModel]:
        """Square, then its holes."""
        return [self.gridsquare, *self.foilholes]


class ParsedGridSquareImage(_Parsed):
    """``GridSquare_<ts>.xml``: a square's image metadata (``gridsquare`` is ``None`` outside a session)."""

    kind: Literal[EpuFileKind.GRIDSQUARE_IMAGE] = EpuFileKind.GRIDSQUARE_IMAGE
    image: ImageMetadata
    gridsquare: GridSquareData | None = None

    def entities(self) -> list[BaseModel]:
        """The partial square when its id is known."""
        return [self.gridsquare] if self.gridsquare is not None else []


class ParsedFoilHoleImage(_Parsed):
    """``FoilHoles/FoilHole_<id>_<ts>.xml``: the image fields of one hole (newest image wins)."""

    kind: Literal[EpuFileKind.FOILHOLE_IMAGE] = EpuFileKind.FOILHOLE_IMAGE
    image: ImageMetadata
    foilhole: FoilHoleData

    def entities(self) -> list[BaseModel]:
        """The partial hole."""
        return [self.foilhole]


class ParsedMicrograph(_Parsed):
    """``Data/FoilHole_<fh>_Data_<a>_<b>_<ts>.xml``: one exposure."""

    kind: Literal[EpuFileKind.MICROGRAPH] = EpuFileKind.MICROGRAPH
    micrograph: MicrographData

    def entities(self) -> list[BaseModel]:
        """The micrograph."""
        return [self.micrograph]


class ParsedFractions(_Parsed):
    """``*_Fractions.xml`` (camera software): belongs to micrograph ``micrograph_id``."""

    kind: Literal[EpuFileKind.FRACTIONS] = EpuFileKind.FRACTIONS
    micrograph_id: str
    fractions: FractionsData

    def entities(self) -> list[BaseModel]:
        """The fractions summary (attach it to the micrograph)."""
        return [self.fractions]


class ParsedAtlas(_Parsed):
    """``Atlas.dm``: atlas, tiles (with their grid-square positions) and atlas-derived grid-square fields.

    The atlas does not know its session: link it to a grid whose ``atlas_local_path`` equals
    ``atlas.atlas_path``.
    """

    kind: Literal[EpuFileKind.ATLAS] = EpuFileKind.ATLAS
    atlas: AtlasData
    gridsquares: list[GridSquareData] = []

    @property
    def tiles(self) -> list[AtlasTileData]:
        """The atlas tiles."""
        return self.atlas.tiles

    @property
    def positions(self) -> list[AtlasTileGridSquarePositionData]:
        """Every tile/grid-square link."""
        return [p for tile in self.atlas.tiles for p in tile.gridsquare_positions]

    def entities(self) -> list[BaseModel]:
        """Atlas, tiles, then the atlas-derived grid squares."""
        return [self.atlas, *self.atlas.tiles, *self.gridsquares]


class ParsedAtlasImage(_Parsed):
    """``Atlas_<atlasId>.xml``: stitched atlas image metadata."""

    kind: Literal[EpuFileKind.ATLAS_IMAGE] = EpuFileKind.ATLAS_IMAGE
    atlas_id: str
    image: ImageMetadata

    def entities(self) -> list[BaseModel]:
        """No entity of its own (metadata of the atlas)."""
        return []


class ParsedAtlasTile(_Parsed):
    """``Tile_<tileId>_<n>_<atlasId>.xml``: one tile's image metadata."""

    kind: Literal[EpuFileKind.ATLAS_TILE] = EpuFileKind.ATLAS_TILE
    tile: AtlasTileData

    def entities(self) -> list[BaseModel]:
        """The partial tile."""
        return [self.tile]


class ParsedSample(_Parsed):
    """``Sample<k>/Sample.dm``."""

    kind: Literal[EpuFileKind.SAMPLE] = EpuFileKind.SAMPLE
    sample: SampleData

    def entities(self) -> list[BaseModel]:
        """The sample."""
        return [self.sample]


class ParsedScreeningSession(_Parsed):
    """``ScreeningSession.dm``."""

    kind: Literal[EpuFileKind.SCREENING_SESSION] = EpuFileKind.SCREENING_SESSION
    screening: ScreeningSessionData

    def entities(self) -> list[BaseModel]:
        """The screening session."""
        return [self.screening]


ParsedFile = (
    ParsedSession
    | ParsedGridSquareMetadata
    | ParsedGridSquareImage
    | ParsedFoilHoleImage
    | ParsedMicrograph
    | ParsedFractions
    | ParsedAtlas
    | ParsedAtlasImage
    | ParsedAtlasTile
    | ParsedSample
    | ParsedScreeningSession
)
"""Union of every result type; switch on ``.kind``."""


# ------------------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------------------


def parse_file(
    path: str | os.PathLike[str],
    *,
    path_map: PathMap | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    epu_path: EpuPath | None = None,
) -> ParsedFile:
    """Parse one EPU file.

    Args:
        path: the file; its kind comes from :func:`classify_path` unless ``epu_path`` is given.
        path_map: Windows prefix -> local folder map for paths inside the files (atlas location).
        max_bytes: size cap; larger files raise :class:`UnsafeFileError` without being read.
        epu_path: a classification computed earlier (the watcher has one), to skip classifying again.

    Raises:
        UnknownFileError: not an EPU file kind. IncompleteFileError: truncated/empty (retry later).
        MalformedFileError: complete but unexpected. UnsafeFileError: DOCTYPE/entities or over the cap.
    """
    info = epu_path or classify_path(path)
    if info is None:
        raise UnknownFileError(os.fspath(path), "not an EPU file kind (see epu-format.md section 3)")
    data = load_bytes(path, max_bytes)
    return parse_bytes(data, info, path_map=path_map, max_bytes=max_bytes)


def parse_bytes(
    data: bytes,
    epu_path: EpuPath,
    *,
    path_map: PathMap | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParsedFile:
    """Parse the bytes of a file already classified as ``epu_path`` (same errors as :func:`parse_file`)."""
    root = parse_xml(data, epu_path.path, max_bytes)
    reader = Reader(root, epu_path.path, has_refs=mentions_ref(data))
    try:
        return _PARSERS[epu_path.kind](reader, epu_path, path_map)
    except MalformedFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # Pydantic validation errors are ValueErrors: a value of the wrong shape in an otherwise valid file.
        raise MalformedFileError(epu_path.path, f"unexpected content: {exc}".splitlines()[0]) from exc


# ------------------------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------------------------

_SO = {name: q(NS_SO, name) for name in (
    "name", "uniqueID", "CustomData", "SpatialScale", "pixelSize", "x", "y", "numericValue", "microscopeData",
    "acquisition", "acquisitionDateTime", "camera", "Binning", "CameraSpecificInput", "ExposureTime", "Name",
    "ReadoutArea", "core", "ApplicationSoftware", "ApplicationSoftwareVersion", "gun", "AccelerationVoltage",
    "instrument", "ComputerName", "InstrumentID", "InstrumentModel", "optics", "BeamShift", "BeamTilt",
    "Defocus",
    "EFTEMOn", "EnergyFilter", "EnergySelectionSlitInserted", "EnergySelectionSlitWidth", "ImageShift",
    "ProbeMode", "SpotIndex", "TemMagnification", "NominalMagnification", "stage", "Position",
    "A", "B", "X", "Y", "Z",
)}  # fmt: skip
_D_X, _D_Y, _D_W, _D_H = (q(NS_DRAW, n) for n in ("x", "y", "width", "height"))
_FT_X, _FT_Y = q(NS_FT, "_x"), q(NS_FT, "_y")
_SO_IMAGE = q(NS_SO, "MicroscopeImage")
_T_ID = q(NS_T, "Id")
_T_BASE = q(NS_T, "BaseFileName")
_T_FORMAT = q(NS_T, "FileFormat")
_T_FILENAME = q(NS_T, "FileName")
_ARR_KEY, _ARR_VALUE = q(NS_ARR, "Key"), q(NS_ARR, "Value")


# Clark names, built once: building them per lookup showed up in profiles of 570-hole grid squares.
_EPU_NAMES = (
    "AtlasId",
    "AtlasNodeId",
    "AutoloaderDescription",
    "AutoloaderSlot",
    "ClusteringMode",
    "ClusteringRadius",
    "DataAcquisitionAreas",
    "Defocus",
    "DoseFractionsOutputFormat",
    "EndDateTime",
    "ExposureTime",
    "FilterHolesSettings",
    "GridGeometry",
    "GridSquareId",
    "GridSquareImagePath",
    "GridSquareShape",
    "GridSquares",
    "GridType",
    "HoleSize",
    "HoleSpacing",
    "Image",
    "ImageFileFormat",
    "IsNearGridBar",
    "Name",
    "Order",
    "ParticleAcquisitions",
    "Path",
    "PixelCenter",
    "PixelWidthHeight",
    "Position",
    "Quality",
    "Rotation",
    "Samples",
    "Selected",
    "StagePosition",
    "StartDateTime",
    "State",
    "StorageFolders",
    "TargetAreaTemplate",
    "TargetLocations",
    "TargetLocationsEfficient",
    "TemplateImagePixelSize",
    "Unusable",
)
_EPU_TAGS = {ns: {n: q(ns, n) for n in _EPU_NAMES} for ns in (NS_EPU, NS_EPU_OLD)}
_GA_TAGS = {
    n: q(NS_GA, n)
    for n in (
        "AcquisitionDateTime",
        "AlignedStagePosition",
        "Atlas",
        "AtlasAlignmentTransformation",
        "AtlasImageReference",
        "AtlasPixelPosition",
        "Category",
        "Description",
        "Name",
        "NodePosition",
        "Nodes",
        "PositionOnTheAtlas",
        "StagePosition",
        "StartDateTime",
        "StorageFolder",
        "TileId",
        "TileImageReference",
        "TilePositions",
        "TilesEfficient",
    )
}
_SCR_TAGS = {
    n: q(NS_SCR, n)
    for n in (
        "AcquiredAtlasAvailable",
        "AtlasAcquisitionStatus",
        "AtlasSession",
        "AtlasSessionStorageFolder",
        "Name",
        "Samples",
        "SlotId",
        "SpecimenCarrierType",
        "StartDateTime",
        "StorageFolder",
    )
}


# The helpers below return the field values of a nested value object (StagePosition, Vector2, FoundHole,
# Fractionation) as a dict, which the model holding it validates: one pydantic call builds the whole tree, which
# measured about twice as fast as constructing each nested model separately. Field sets are the same as
# keyword construction would give (``model_fields_set`` included).
Fields = dict[str, Any]
_SO_X, _SO_Y, _SO_Z, _SO_A, _SO_B = (_SO[n] for n in ("X", "Y", "Z", "A", "B"))


def _stage(r: Reader, el: Element | None) -> Fields | None:
    """``Position``-shaped element (``so:X/Y/Z/A/B``) -> :class:`StagePosition` fields."""
    kids = r.kids(el)
    if not kids:
        return None
    as_float = r.as_float
    return {
        "x_m": as_float(kids.get(_SO_X)),
        "y_m": as_float(kids.get(_SO_Y)),
        "z_m": as_float(kids.get(_SO_Z)),
        "alpha_rad": as_float(kids.get(_SO_A)),
        "beta_rad": as_float(kids.get(_SO_B)),
    }


def _vector(r: Reader, el: Element | None) -> Fields | None:
    """``ft:_x/_y`` vector -> :class:`Vector2` fields (``None`` unless both are set)."""
    kids = r.kids(el)
    x, y = r.as_float(kids.get(_FT_X)), r.as_float(kids.get(_FT_Y))
    return None if x is None or y is None else {"x": x, "y": y}


def _point(r: Reader, el: Element | None) -> tuple[float | None, float | None]:
    """``draw:x/y``."""
    kids = r.kids(el)
    return r.as_float(kids.get(_D_X)), r.as_float(kids.get(_D_Y))


def _size(r: Reader, el: Element | None) -> tuple[float | None, float | None]:
    """``draw:width/height``."""
    kids = r.kids(el)
    return r.as_float(kids.get(_D_W)), r.as_float(kids.get(_D_H))


def _rect(r: Reader, el: Element | None) -> tuple[float | None, float | None, float | None, float | None]:
    """``draw:x/y/width/height`` of one element (``_point`` and ``_size`` with one children map)."""
    kids = r.kids(el)
    as_float = r.as_float
    return (
        as_float(kids.get(_D_X)),
        as_float(kids.get(_D_Y)),
        as_float(kids.get(_D_W)),
        as_float(kids.get(_D_H)),
    )


_GAD_CENTER, _GAD_SIZE, _GAD_PHYSICAL, _GAD_ROTATION, _GAD_QUALITY = (
    q(NS_GAD, n) for n in ("Center", "Size", "Physical", "Rotation", "Quality")
)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


def _type_of(value: Element) -> tuple[str | None, str]:
    """Resolve the ``i:type`` QName of a property-bag value: (namespace URI, local name)."""
    raw = value.get(I_TYPE_KEY)
    if not raw:
        return None, ""
    prefix, sep, local = raw.partition(":")
    if not sep:
        return value.nsmap.get(None), raw
    return value.nsmap.get(prefix), local


def _type_local_name(value: Element) -> str:
    """The local name of the ``i:type`` QName alone (``_type_of(value)[1]`` without building ``nsmap``)."""
    raw = value.get(I_TYPE_KEY)
    if not raw:
        return ""
    _, sep, local = raw.partition(":")
    return local if sep else raw


def _property_bag(r: Reader, el: Element | None) -> dict[str, Element]:
    """``arr:KeyValueOfstringanyType`` entries: key -> value element (dereferenced; nil values left out).

    Types are resolved only for the entries that are read (:func:`_type_of`); resolving every QName would
    cost more than the rest of the image. An entry is read as its last ``Key`` and last ``Value`` child; the
    usual two-child ``Key, Value`` entry takes a shortcut with the same result.
    """
    out: dict[str, Element] = {}
    if el is None:
        return out
    el = r.deref(el)
    if not len(el) or r.is_nil(el):
        return out
    has_refs = r.has_refs
    for entry in children(el):
        parts = children(entry)
        key: str | None
        value: Element | None
        if len(parts) == 2 and parts[0].tag == _ARR_KEY and parts[1].tag == _ARR_VALUE:
            key, value = parts[0].text, parts[1]
        else:
            key, value = _bag_entry(entry)
        if key is None or value is None:
            continue
        if has_refs:
            value = r.deref(value)
        if value.get(I_NIL_KEY) == "true":
            continue
        out[key.strip()] = value
    return out


def _bag_entry(entry: Element) -> tuple[str | None, Element | None]:
    """The general case of a property-bag entry: text of the last ``Key``, the last ``Value``."""
    key = value = None
    for part in children(entry):
        if part.tag == _ARR_KEY:
            key = part.text
        elif part.tag == _ARR_VALUE:
            value = part
    return key, value


_FT_CENTER, _FT_SIZE, _FT_QUALITY, _FT_ROTATION, _FT_SHEAR = (
    q(NS_FT, n) for n in ("Center", "Size", "Quality", "Rotation", "Shear")
)
_OMP_NUMBER, _OMP_DOSE_FRACTIONS = q(NS_OMP, "NumberOffractions"), q(NS_OMP, "DoseFractions")


def _found_hole(r: Reader, value: Element) -> Fields:
    """``Shape2D`` value of ``FindFoilHoleCenterResults`` -> :class:`FoundHole` fields."""
    kids = r.kids(value)
    cx, cy = _point(r, kids.get(_FT_CENTER))
    w, h = _size(r, kids.get(_FT_SIZE))
    return {
        "center_x_px": cx,
        "center_y_px": cy,
        "width_px": w,
        "height_px": h,
        "quality": r.as_float(kids.get(_FT_QUALITY)),
        "rotation_rad": r.as_float(kids.get(_FT_ROTATION)),
        "shear": r.as_float(kids.get(_FT_SHEAR)),
    }


def _fractionation(r: Reader, local: str, value: Element) -> Fields:
    """``FractionationSettings`` value (``local``: its type's local name) -> :class:`Fractionation` fields."""
    kids = r.kids(value)
    if local == "EquidistantFractionation":
        return {"kind": "equidistant", "number_of_fractions": r.as_int(kids.get(_OMP_NUMBER))}
    if local == "VaridistantFractionation":
        fractions = kids.get(_OMP_DOSE_FRACTIONS)
        count = sum(1 for item in r.elements(fractions) if not r.is_nil(r.deref(item)))
        return {"kind": "varidistant", "number_of_fractions": count}
    if local == "EerFractionation":
        return {"kind": "eer"}
    return {"kind": local or "unknown"}


# Clark names of the MicroscopeImage members read below, bound to module constants once: the image reader runs
# for every micrograph and foil-hole image, where even dictionary look-ups of names show in profiles.
_S_CUSTOM, _S_UNIQUE_ID, _S_SPATIAL, _S_PIXEL, _S_NUMERIC, _S_X, _S_Y = (
    _SO[n] for n in ("CustomData", "uniqueID", "SpatialScale", "pixelSize", "numericValue", "x", "y")
)
_S_MICROSCOPE, _S_ACQUISITION, _S_CAMERA, _S_CORE, _S_GUN, _S_INSTRUMENT, _S_OPTICS, _S_STAGE = (
    _SO[n]
    for n in ("microscopeData", "acquisition", "camera", "core", "gun", "instrument", "optics", "stage")
)
_S_ACQ_TIME, _S_BINNING, _S_CAMERA_INPUT, _S_EXPOSURE, _S_NAME, _S_READOUT = (
    _SO[n]
    for n in ("acquisitionDateTime", "Binning", "CameraSpecificInput", "ExposureTime", "Name", "ReadoutArea")
)
_S_SOFTWARE, _S_SOFTWARE_VERSION, _S_VOLTAGE, _S_COMPUTER, _S_INSTRUMENT_ID, _S_INSTRUMENT_MODEL = (
    _SO[n]
    for n in (
        "ApplicationSoftware",
        "ApplicationSoftwareVersion",
        "AccelerationVoltage",
        "ComputerName",
        "InstrumentID",
        "InstrumentModel",
    )
)
_S_BEAM_SHIFT, _S_BEAM_TILT, _S_DEFOCUS, _S_EFTEM, _S_IMAGE_SHIFT, _S_PROBE, _S_SPOT = (
    _SO[n] for n in ("BeamShift", "BeamTilt", "Defocus", "EFTEMOn", "ImageShift", "ProbeMode", "SpotIndex")
)
_S_FILTER, _S_SLIT_IN, _S_SLIT_WIDTH, _S_TEM_MAG, _S_NOMINAL_MAG, _S_POSITION = (
    _SO[n]
    for n in (
        "EnergyFilter",
        "EnergySelectionSlitInserted",
        "EnergySelectionSlitWidth",
        "TemMagnification",
        "NominalMagnification",
        "Position",
    )
)


def _image_metadata(r: Reader, root: Element) -> ImageMetadata:
    """Read a ``MicroscopeImage`` root.

    Every member is read at its exact path (``microscopeData/optics/Defocus``...), one children map per
    container on the way; the same code serves documents with and without ``z:Ref`` (the reader dereferences
    only when the document has references).
    """
    if root.tag != _SO_IMAGE:
        raise r.malformed(f"expected root MicroscopeImage, found {local_name(str(root.tag))}", root)
    kids, as_float, as_str, as_bool = r.kids, r.as_float, r.as_str, r.as_bool
    top = kids(root)
    md = kids(top.get(_S_MICROSCOPE))
    acquisition = kids(md.get(_S_ACQUISITION))
    camera = kids(acquisition.get(_S_CAMERA))
    optics = kids(md.get(_S_OPTICS))
    core = kids(md.get(_S_CORE))
    instrument = kids(md.get(_S_INSTRUMENT))
    energy_filter = kids(optics.get(_S_FILTER))

    pixel = kids(kids(top.get(_S_SPATIAL)).get(_S_PIXEL))
    pixel_x = as_float(kids(pixel.get(_S_X)).get(_S_NUMERIC))
    pixel_y = as_float(kids(pixel.get(_S_Y)).get(_S_NUMERIC))
    width, height = _size(r, camera.get(_S_READOUT))
    bin_x, bin_y = _point(r, camera.get(_S_BINNING))

    bag = _property_bag(r, top.get(_S_CUSTOM))
    custom: dict[str, str] = {}
    for key, value in bag.items():
        if not len(value):  # scalar entries only; structured ones are read below when known
            custom[key] = (value.text or "").strip()
    found: Fields | None = None
    shape = bag.get("FindFoilHoleCenterResults")
    if shape is not None and _type_of(shape) == (NS_FT, "Shape2D"):
        found = _found_hole(r, shape)
    camera_input = _property_bag(r, camera.get(_S_CAMERA_INPUT))
    fractionation: Fields | None = None
    settings = camera_input.get("FractionationSettings")
    if settings is not None:
        # Only the type's local name decides (resolving its namespace prefix costs an nsmap per image).
        fractionation = _fractionation(r, _type_local_name(settings), settings)

    detector = as_str(camera.get(_S_NAME))
    commercial = bag.get("DetectorCommercialName")
    if commercial is None and detector:
        commercial = bag.get(f"Detectors[{detector}].CommercialName")
    frame_rate = bag.get(f"Detectors[{detector}].FrameRate") if detector else None

    return ImageMetadata(
        unique_id=as_str(top.get(_S_UNIQUE_ID)),
        acquisition_datetime=r.as_datetime(acquisition.get(_S_ACQ_TIME)),
        pixel_size_x_m=pixel_x,
        pixel_size_y_m=pixel_y,
        image_width_px=_int_or_none(width),
        image_height_px=_int_or_none(height),
        binning_x=_int_or_none(bin_x),
        binning_y=_int_or_none(bin_y),
        detector_name=detector,
        detector_commercial_name=as_str(commercial),
        exposure_time_s=as_float(camera.get(_S_EXPOSURE)),
        defocus_m=as_float(optics.get(_S_DEFOCUS)),
        applied_defocus_m=as_float(bag.get("AppliedDefocus")),
        dose_e_per_m2=as_float(bag.get("Dose")),
        dose_on_camera_e_per_px=as_float(bag.get("DoseOnCamera")),
        dose_rate=as_float(bag.get("DoseRate")),
        stage_position=_stage(r, kids(md.get(_S_STAGE)).get(_S_POSITION)),
        beam_shift=_vector(r, optics.get(_S_BEAM_SHIFT)),
        image_shift=_vector(r, optics.get(_S_IMAGE_SHIFT)),
        beam_tilt=_vector(r, optics.get(_S_BEAM_TILT)),
        nominal_magnification=as_float(kids(optics.get(_S_TEM_MAG)).get(_S_NOMINAL_MAG)),
        spot_index=r.as_int(optics.get(_S_SPOT)),
        probe_mode=as_str(optics.get(_S_PROBE)),
        acceleration_voltage_v=as_float(kids(md.get(_S_GUN)).get(_S_VOLTAGE)),
        instrument_model=as_str(instrument.get(_S_INSTRUMENT_MODEL)),
        instrument_id=as_str(instrument.get(_S_INSTRUMENT_ID)),
        computer_name=as_str(instrument.get(_S_COMPUTER)),
        software_name=as_str(core.get(_S_SOFTWARE)),
        software_version=as_str(core.get(_S_SOFTWARE_VERSION)),
        energy_filter_on=as_bool(optics.get(_S_EFTEM)),
        energy_selection_slit_inserted=as_bool(energy_filter.get(_S_SLIT_IN)),
        energy_selection_slit_width_ev=as_float(energy_filter.get(_S_SLIT_WIDTH)),
        phase_plate_used=as_bool(bag.get("PhasePlateUsed")),
        electron_counting=as_bool(camera_input.get("ElectronCountingEnabled")),
        super_resolution_factor=r.as_int(camera_input.get("SuperResolutionFactor")),
        fractionation=fractionation,
        frame_rate_hz=as_float(frame_rate),
        found_hole=found,
        custom_data=custom,
    )


# ------------------------------------------------------------------------------------------------------------
# EpuSession.dm
# ------------------------------------------------------------------------------------------------------------


def _epu_ns(r: Reader, root: Element, expected: str) -> str:
    """The EPU persistence namespace of ``root`` (new or EPU 1.2/1.3), checking the root's local name."""
    tag = str(root.tag)
    for ns in (NS_EPU, NS_EPU_OLD):
        if tag == q(ns, expected):
            return ns
    raise r.malformed(f"expected root {expected} in an EPU persistence namespace, found {tag}", root)


def _parse_session(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedSession:
    root = r.root
    ns = _epu_ns(r, root, "EpuSessionXml")

    e = _EPU_TAGS[ns]

    top = r.kids(root)
    session_id = r.require(top.get(_T_ID), root, _T_ID)
    name = r.require(top.get(e["Name"]), root, e["Name"])
    warnings: list[str] = []

    storage_path = None
    for folder in r.list_items(top.get(e["StorageFolders"])):
        storage_path = r.as_str(r.kids(folder).get(e["Path"]))
        if storage_path:
            break

    samples = r.list_items(top.get(e["Samples"]))
    if len(samples) > 1:
        warnings.append(f"{len(samples)} samples in the session; only the first is used")
    sample = r.kids(samples[0]) if samples else {}
    atlas_path = r.as_str(sample.get(e["AtlasId"])) or None
    gridsquare_ids = [r.require(key, key, "key") for key, _ in r.pairs(sample.get(e["GridSquares"]))]
    holes = r.kids(sample.get(e["FilterHolesSettings"]))
    template = r.kids(sample.get(e["TargetAreaTemplate"]))
    areas: list[AcquisitionTemplateArea] = []
    for key, value in r.pairs(template.get(e["DataAcquisitionAreas"])):
        setting_ids: list[str] = []
        defocus: list[float] = []
        exposure: float | None = None
        for setting in r.elements(value):
            if local_name(str(setting.tag)) != "ImageAcquisitionSettingXml":
                continue
            sk = r.kids(setting)
            sid = r.as_str(sk.get(_T_ID))
            if sid:
                setting_ids.append(sid)
            defocus.extend(v for d in r.elements(sk.get(e["Defocus"])) if (v := r.as_float(d)) is not None)
            exposure = r.as_float(sk.get(e["ExposureTime"]))
        areas.append(
            AcquisitionTemplateArea(
                area_id=r.require(key, key, "key"),
                setting_ids=setting_ids,
                defocus_values_m=defocus,
                exposure_time_s=exposure,
            )
        )
    template_pixel, _ = _size(r, template.get(e["TemplateImagePixelSize"]))

    session_root = info.session_root
    atlas_local = locate_atlas(atlas_path, session_root, path_map) if atlas_path else None
    if atlas_path and atlas_local is None:
        warnings.append(f"atlas {atlas_path} not found locally (configure a path map)")
    start = r.as_datetime(top.get(e["StartDateTime"]))
    end = r.as_datetime(sample.get(e["EndDateTime"]))
    acquisition = AcquisitionData(
        session_id=session_id,
        session_root=session_root,
        name=name,
        start_time=start,
        end_time=end,
        epu_version=assembly_version(root),
        storage_path=storage_path,
        atlas_path=atlas_path,
        atlas_local_path=str(atlas_local) if atlas_local else None,
        clustering_mode=r.as_str(top.get(e["ClusteringMode"])),
        clustering_radius_m=r.as_float(top.get(e["ClusteringRadius"])),
        image_file_format=r.as_str(top.get(e["ImageFileFormat"])),
        dose_fractions_output_format=r.as_str(top.get(e["DoseFractionsOutputFormat"])),
        autoloader_slot=r.as_int(top.get(e["AutoloaderSlot"])),
        autoloader_description=r.as_str(top.get(e["AutoloaderDescription"])),
        grid_type=r.as_str(sample.get(e["GridType"])),
        grid_geometry=r.as_str(sample.get(e["GridGeometry"])),
        hole_size_m=r.as_float(holes.get(e["HoleSize"])),
        hole_spacing_m=r.as_float(holes.get(e["HoleSpacing"])),
        sample_start_time=r.as_datetime(sample.get(e["StartDateTime"])),
        sample_end_time=end,
        template_pixel_size_m=template_pixel,
        template_areas=areas,
        gridsquare_ids=gridsquare_ids,
    )
    if atlas_local is not None:
        atlas_dir: str | None = str(atlas_local.parent)
    elif atlas_path:
        atlas_dir = atlas_path.replace("/", "\\").rpartition("\\")[0] or None
    else:
        atlas_dir = None
    grid = GridData(
        session_id=session_id,
        session_root=session_root,
        name=name,
        data_dir=session_root,
        atlas_dir=atlas_dir,
        atlas_path=atlas_path,
        atlas_local_path=acquisition.atlas_local_path,
        scan_start_time=start,
        scan_end_time=end,
    )
    return ParsedSession(path=info.path, epu_path=info, warnings=warnings, acquisition=acquisition, grid=grid)


# ------------------------------------------------------------------------------------------------------------
# Metadata/GridSquare_<id>.dm
# ------------------------------------------------------------------------------------------------------------


def _foilhole_from_dm(
    r: Reader, ns: str, key: Element, value: Element, gridsquare_id: str, session_root: str | None
) -> FoilHoleData:
    e = _EPU_TAGS[ns]

    hk = r.kids(value)
    fh_id = r.as_str(hk.get(_T_ID)) or r.require(key, key, "key")
    parent = r.as_str(hk.get(e["GridSquareId"])) or gridsquare_id
    if parent != gridsquare_id:
        raise r.malformed(f"foil hole {fh_id} says grid square {parent}, file is {gridsquare_id}", value)
    cx, cy = _point(r, hk.get(e["PixelCenter"]))
    w, h = _size(r, hk.get(e["PixelWidthHeight"]))
    micrographs: list[str] = []
    for _, pa in r.pairs(hk.get(e["ParticleAcquisitions"])):
        base = r.as_str(r.kids(r.kids(pa).get(e["Image"])).get(_T_BASE))
        if base:
            micrographs.append(base)
    return FoilHoleData(
        foilhole_id=fh_id,
        gridsquare_id=gridsquare_id,
        session_root=session_root,
        x_location_px=cx,
        y_location_px=cy,
        width_px=w,
        height_px=h,
        stage_position=_stage(r, hk.get(e["StagePosition"])),
        is_near_grid_bar=r.as_bool(hk.get(e["IsNearGridBar"])),
        selected=r.as_bool(hk.get(e["Selected"])),
        state=r.as_str(hk.get(e["State"])),
        quality=r.as_float(hk.get(e["Quality"])),
        rotation_rad=r.as_float(hk.get(e["Rotation"])),
        image_base_filename=r.as_str(r.kids(hk.get(e["Image"])).get(_T_BASE)),
        micrograph_ids=micrographs,
    )


def _parse_gridsquare_dm(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedGridSquareMetadata:
    root = r.root
    ns = _epu_ns(r, root, "GridSquareXml")

    e = _EPU_TAGS[ns]

    top = r.kids(root)
    gs_id = r.require(top.get(_T_ID), root, _T_ID)
    if info.gridsquare_id is not None and info.gridsquare_id != gs_id:
        raise r.malformed(
            f"file name says grid square {info.gridsquare_id}, content says {gs_id}", root, _T_ID
        )
    warnings: list[str] = []
    shape = r.kids(top.get(e["GridSquareShape"]))
    center_x, center_y = _point(r, shape.get(q(NS_SAT, "center")))
    vertices: list[tuple[float, float]] = []
    for point in r.list_items(shape.get(q(NS_SAT, "vertices"))) or list(
        r.elements(shape.get(q(NS_SAT, "vertices")))
    ):
        px, py = _point(r, point)
        if px is not None and py is not None:
            vertices.append((px, py))

    holes: list[FoilHoleData] = []
    locations = r.kids(top.get(e["TargetLocations"]))
    efficient = locations.get(e["TargetLocationsEfficient"])
    session_root = info.session_root
    if efficient is not None and not r.is_nil(r.deref(efficient)):
        for key, value in r.pairs(efficient):
            if value is not None:
                holes.append(_foilhole_from_dm(r, ns, key, value, gs_id, session_root))
    else:
        fallback = locations.get(e["TargetLocations"])
        if fallback is not None and not r.is_nil(r.deref(fallback)):
            # Lacey grids (unconfirmed on real files): holes said to sit under
            # TargetLocations/TargetLocations.
            warnings.append("holes read from TargetLocations/TargetLocations (lacey-grid fallback)")
            entries = list(r.pairs(fallback))
            if entries:
                for key, value in entries:
                    if value is not None:
                        holes.append(_foilhole_from_dm(r, ns, key, value, gs_id, session_root))
            else:
                for item in r.list_items(fallback):
                    id_el = r.kids(item).get(_T_ID)
                    if id_el is None:
                        raise r.malformed("target location without an Id", item, _T_ID)
                    holes.append(_foilhole_from_dm(r, ns, id_el, item, gs_id, session_root))

    square = GridSquareData(
        gridsquare_id=gs_id,
        session_root=session_root,
        atlas_node_id=r.as_int(top.get(e["AtlasNodeId"])),
        state=r.as_str(top.get(e["State"])),
        selected=r.as_bool(top.get(e["Selected"])),
        unusable=r.as_bool(top.get(e["Unusable"])),
        order=r.as_int(top.get(e["Order"])),
        rotation_rad=r.as_float(top.get(e["Rotation"])),
        stage_position=_stage(r, top.get(e["Position"])),
        hole_spacing_m=r.as_float(top.get(e["HoleSpacing"])),
        image_base_filename=r.as_str(r.kids(top.get(e["Image"])).get(_T_BASE)),
        image_path=r.as_str(top.get(e["GridSquareImagePath"])),
        outline_center_x_px=center_x,
        outline_center_y_px=center_y,
        outline_vertices_px=vertices,
        foilhole_count=len(holes),
    )
    return ParsedGridSquareMetadata(
        path=info.path, epu_path=info, warnings=warnings, gridsquare=square, foilholes=holes
    )


# ------------------------------------------------------------------------------------------------------------
# Image XMLs
# ------------------------------------------------------------------------------------------------------------


def _parse_gridsquare_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedGridSquareImage:
    image = _image_metadata(r, r.root)
    square = None
    if info.gridsquare_id is not None:
        square = GridSquareData(
            gridsquare_id=info.gridsquare_id,
            session_root=info.session_root,
            image=image,
            image_timestamp=info.timestamp,
            image_path=info.path,
        )
    return ParsedGridSquareImage(path=info.path, epu_path=info, image=image, gridsquare=square)


def _parse_foilhole_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedFoilHoleImage:
    image = _image_metadata(r, r.root)
    if info.foilhole_id is None:  # pragma: no cover - classify_path always sets it for this kind
        raise r.malformed("foil-hole image without a foil-hole id in its name", r.root)
    hole = FoilHoleData(
        foilhole_id=info.foilhole_id,
        gridsquare_id=info.gridsquare_id,
        session_root=info.session_root,
        found_hole=image.found_hole,
        image_stage_position=image.stage_position,
        image=image,
        image_timestamp=info.timestamp,
        image_path=info.path,
    )
    return ParsedFoilHoleImage(path=info.path, epu_path=info, image=image, foilhole=hole)


def _parse_micrograph(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedMicrograph:
    image = _image_metadata(r, r.root)
    stem = info.micrograph_id or PurePath(info.path).stem
    # The pattern of parse_micrograph_stem, without building the timestamp that is not used here.
    if info.foilhole_id is None or _MICROGRAPH_STEM_RE.match(stem) is None:
        raise r.malformed(
            f"micrograph name {stem!r} does not match FoilHole_<id>_Data_<a>_<b>_<date>_<time>", r.root
        )
    micrograph = MicrographData(
        micrograph_id=stem,
        foilhole_id=info.foilhole_id,
        gridsquare_id=info.gridsquare_id,
        session_root=info.session_root,
        location_id=info.location_id,
        setting_id=info.setting_id,
        name_timestamp=info.timestamp,
        manifest_file=info.path,
        image=image,
    )
    return ParsedMicrograph(path=info.path, epu_path=info, micrograph=micrograph)


def _parse_atlas_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlasImage:
    image = _image_metadata(r, r.root)
    atlas_id = info.atlas_id or PurePath(info.path).stem.partition("_")[2]
    return ParsedAtlasImage(path=info.path, epu_path=info, atlas_id=atlas_id, image=image)


def _parse_tile_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlasTile:
    image = _image_metadata(r, r.root)
    if info.tile_id is None or info.atlas_id is None:  # pragma: no cover - set by classify_path
        raise r.malformed("tile image without tile/atlas ids in its name", r.root)
    atlas_path = str(Path(info.atlas_root) / "Atlas.dm") if info.atlas_root else None
    tile = AtlasTileData(
        tile_id=info.tile_id,
        atlas_id=info.atlas_id,
        atlas_path=atlas_path,
        tile_index=info.tile_index,
        base_filename=PurePath(info.path).stem,
        stage_position=image.stage_position,
        image=image,
    )
    return ParsedAtlasTile(path=info.path, epu_path=info, tile=tile)


# ------------------------------------------------------------------------------------------------------------
# Atlas.dm, Sample.dm, ScreeningSession.dm
# ------------------------------------------------------------------------------------------------------------


def _atlas_from_session(
    r: Reader, session: Element, atlas_path: str | None, warnings: list[str]
) -> tuple[AtlasData, list[GridSquareData]]:
    """Read an ``AtlasSessionXml``-shaped element (``Atlas.dm`` root, or embedded in a screening session)."""

    g = _GA_TAGS

    top = r.kids(session)
    atlas_id = r.require(top.get(_T_ID), session, _T_ID)
    atlas = r.kids(top.get(g["Atlas"]))
    image_ref = r.kids(atlas.get(g["AtlasImageReference"]))
    alignment = r.kids(atlas.get(g["AtlasAlignmentTransformation"]))
    tiles: list[AtlasTileData] = []
    squares: list[GridSquareData] = []
    for tile_el in r.list_items(atlas.get(g["TilesEfficient"])):
        tk = r.kids(tile_el)
        tile_id = r.require(tk.get(_T_ID), tile_el, _T_ID)
        px, py, pw, ph = _rect(r, tk.get(g["AtlasPixelPosition"]))
        ref = r.kids(tk.get(g["TileImageReference"]))
        base = r.as_str(ref.get(_T_BASE))
        index = None
        if base:
            fields = base.split("_")
            if len(fields) == 4 and fields[2].isdigit():
                index = int(fields[2])
        positions: list[AtlasTileGridSquarePositionData] = []
        for key, node in r.pairs(tk.get(g["Nodes"])):
            gs_id = r.require(key, key, "key")
            if node is None:
                warnings.append(f"atlas node {gs_id} on tile {tile_id} is nil")
                continue
            nk = r.kids(node)
            where = r.kids(nk.get(g["PositionOnTheAtlas"]))
            cx, cy = _point(r, where.get(_GAD_CENTER))
            sw, sh = _size(r, where.get(_GAD_SIZE))
            phys_x, phys_y, phys_w, phys_h = _rect(r, where.get(_GAD_PHYSICAL))
            tile_pos: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)
            for tp in r.list_items(nk.get(g["TilePositions"])):
                tpk = r.kids(tp)
                if r.as_str(tpk.get(g["TileId"])) == tile_id:
                    node_pos = r.kids(tpk.get(g["NodePosition"]))
                    tile_pos = (
                        *_point(r, node_pos.get(_GAD_CENTER)),
                        *_size(r, node_pos.get(_GAD_SIZE)),
                    )
                    break
            category = r.as_str(nk.get(g["Category"]))
            squares.append(
                GridSquareData(
                    gridsquare_id=gs_id,
                    atlas_id=atlas_id,
                    tile_id=tile_id,
                    center_x_px=cx,
                    center_y_px=cy,
                    size_width_px=sw,
                    size_height_px=sh,
                    physical_x_m=phys_x,
                    physical_y_m=phys_y,
                    physical_width_m=phys_w,
                    physical_height_m=phys_h,
                    atlas_rotation_rad=r.as_float(where.get(_GAD_ROTATION)),
                    atlas_quality=r.as_float(where.get(_GAD_QUALITY)),
                    atlas_category=category,
                    atlas_stage_position=_stage(r, nk.get(g["StagePosition"])),
                    aligned_stage_position=_stage(r, nk.get(g["AlignedStagePosition"])),
                )
            )
            if cx is None or cy is None or sw is None or sh is None:
                # One odd node must not fail the whole atlas (the reference agent crashes here).
                warnings.append(
                    f"atlas node {gs_id} on tile {tile_id} has no centre/size; not linked to the tile"
                )
                continue
            positions.append(
                AtlasTileGridSquarePositionData(
                    tile_id=tile_id,
                    gridsquare_id=gs_id,
                    atlas_id=atlas_id,
                    center_x_px=cx,
                    center_y_px=cy,
                    size_width_px=sw,
                    size_height_px=sh,
                    tile_center_x_px=tile_pos[0],
                    tile_center_y_px=tile_pos[1],
                    tile_size_width_px=tile_pos[2],
                    tile_size_height_px=tile_pos[3],
                )
            )
        tiles.append(
            AtlasTileData(
                tile_id=tile_id,
                atlas_id=atlas_id,
                atlas_path=atlas_path,
                position_x_px=_int_or_none(px),
                position_y_px=_int_or_none(py),
                width_px=_int_or_none(pw),
                height_px=_int_or_none(ph),
                stage_position=_stage(r, tk.get(g["StagePosition"])),
                base_filename=base,
                file_format=r.as_str(ref.get(_T_FORMAT)),
                tile_index=index,
                gridsquare_positions=positions,
            )
        )
    data = AtlasData(
        atlas_id=atlas_id,
        atlas_path=atlas_path,
        name=r.as_str(top.get(g["Name"])) or "Atlas",
        description=r.as_str(top.get(g["Description"])),
        start_time=r.as_datetime(top.get(g["StartDateTime"])),
        acquisition_datetime=r.as_datetime(atlas.get(g["AcquisitionDateTime"])),
        storage_folder=r.as_str(top.get(g["StorageFolder"])),
        image_base_filename=r.as_str(image_ref.get(_T_BASE)),
        image_file_format=r.as_str(image_ref.get(_T_FORMAT)),
        alignment_rotation_rad=r.as_float(alignment.get(q(NS_AA, "Rotation"))),
        tile_count=len(tiles),
        tiles=tiles,
    )
    return data, squares


def _parse_atlas(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedAtlas:
    root = r.root
    if root.tag != q(NS_GA, "AtlasSessionXml"):
        raise r.malformed(f"expected root AtlasSessionXml, found {local_name(str(root.tag))}", root)
    warnings: list[str] = []
    atlas, squares = _atlas_from_session(r, root, info.path, warnings)
    atlas.gridatlas_version = assembly_version(root)
    return ParsedAtlas(path=info.path, epu_path=info, warnings=warnings, atlas=atlas, gridsquares=squares)


def _parse_sample(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedSample:
    root = r.root
    if root.tag != q(NS_SCR, "SampleXml"):
        raise r.malformed(f"expected root SampleXml, found {local_name(str(root.tag))}", root)

    s = _SCR_TAGS

    top = r.kids(root)
    sample = SampleData(
        sample_id=r.require(top.get(_T_ID), root, _T_ID),
        name=r.as_str(top.get(s["Name"])),
        slot_id=r.as_int(top.get(s["SlotId"])),
        atlas_acquisition_status=r.as_str(top.get(s["AtlasAcquisitionStatus"])),
        acquired_atlas_available=r.as_bool(top.get(s["AcquiredAtlasAvailable"])),
        specimen_carrier_type=r.as_str(top.get(s["SpecimenCarrierType"])),
        storage_folder=r.as_str(top.get(s["AtlasSessionStorageFolder"])),
        atlas_path=str(Path(info.atlas_root) / "Atlas.dm") if info.atlas_root else None,
    )
    return ParsedSample(path=info.path, epu_path=info, sample=sample)


def _parse_screening(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedScreeningSession:
    root = r.root
    if root.tag != q(NS_SCR, "ScreeningSessionXml"):
        raise r.malformed(f"expected root ScreeningSessionXml, found {local_name(str(root.tag))}", root)

    s = _SCR_TAGS

    top = r.kids(root)
    warnings: list[str] = []
    samples: dict[int, str] = {}
    outer = r.kids(top.get(s["Samples"]))
    for key, value in r.pairs(outer.get(q(NS_GA, "Samples"))):
        slot = r.as_int(key)
        file_name = r.as_str(r.kids(value).get(_T_FILENAME)) if value is not None else None
        if slot is not None and file_name:
            samples[slot] = file_name
    embedded = top.get(s["AtlasSession"])
    atlas = None
    if embedded is not None and not r.is_nil(r.deref(embedded)):
        atlas_path = str(Path(info.atlas_root) / "Atlas" / "Atlas.dm") if info.atlas_root else None
        atlas, _ = _atlas_from_session(r, r.deref(embedded), atlas_path, warnings)
    screening = ScreeningSessionData(
        screening_id=r.require(top.get(_T_ID), root, _T_ID),
        name=r.as_str(top.get(s["Name"])),
        start_time=r.as_datetime(top.get(s["StartDateTime"])),
        storage_folder=r.as_str(top.get(s["StorageFolder"])),
        samples=samples,
        atlas=atlas,
    )
    return ParsedScreeningSession(path=info.path, epu_path=info, warnings=warnings, screening=screening)


# ------------------------------------------------------------------------------------------------------------
# _Fractions.xml
# ------------------------------------------------------------------------------------------------------------


def _parse_fractions(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedFractions:
    root = r.root
    if root.tag != "Acquisition":
        raise r.malformed(f"expected root Acquisition (no namespace), found {root.tag}", root)
    top = r.kids(root)
    meta = r.kids(top.get("Info"))
    roi = r.kids(meta.get("RegionOfInterest"))
    frames = 0
    count = 0
    for fraction in r.elements(top.get("Fractions")):
        if fraction.tag != "Fraction":
            continue
        count += 1
        frames += r.as_int(r.kids(fraction).get("NumberOfFrames")) or 0
    counting = r.as_str(meta.get("ElectronCounting"))
    fractions = FractionsData(
        detector=r.as_str(meta.get("Detector")),
        acquisition_id=r.as_str(meta.get("AcquisitionID")),
        acquisition_datetime=r.as_datetime(meta.get("DateTimeWithTimeZone")),
        file_version=r.as_str(meta.get("FileVersion")),
        expected_fractions=r.as_int(meta.get("ExpectedNumberOfFractions")),
        recorded_fractions=r.as_int(meta.get("RecordedNumberOfFractions")),
        frame_count=frames if count else None,
        fraction_count=count,
        width_px=r.as_int(roi.get("Width")),
        height_px=r.as_int(roi.get("Height")),
        binning=r.as_int(meta.get("Binning")),
        electron_counting=None if counting is None else counting.lower() == "on",
        format=r.as_str(meta.get("Format")),
    )
    micrograph_id = info.micrograph_id or PurePath(info.path).stem.removesuffix("_Fractions")
    return ParsedFractions(path=info.path, epu_path=info, micrograph_id=micrograph_id, fractions=fractions)


_PARSERS: dict[EpuFileKind, Callable[[Reader, EpuPath, PathMap | None], ParsedFile]] = {
    EpuFileKind.SESSION: _parse_session,
    EpuFileKind.GRIDSQUARE_METADATA: _parse_gridsquare_dm,
    EpuFileKind.GRIDSQUARE_IMAGE: _parse_gridsquare_image,
    EpuFileKind.FOILHOLE_IMAGE: _parse_foilhole_image,
    EpuFileKind.MICROGRAPH: _parse_micrograph,
    EpuFileKind.FRACTIONS: _parse_fractions,
    EpuFileKind.ATLAS: _parse_atlas,
    EpuFileKind.ATLAS_IMAGE: _parse_atlas_image,
    EpuFileKind.ATLAS_TILE: _parse_tile_image,
    EpuFileKind.SAMPLE: _parse_sample,
    EpuFileKind.SCREENING_SESSION: _parse_screening,
}

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ParsedAtlas",
    "ParsedAtlasImage",
    "ParsedAtlasTile",
    "ParsedFile",
    "ParsedFoilHoleImage",
    "ParsedFractions",
    "ParsedGridSquareImage",
    "ParsedGridSquareMetadata",
    "ParsedMicrograph",
    "ParsedSample",
    "ParsedScreeningSession",
    "ParsedSession",
    "parse_bytes",
    "parse_file",
]
