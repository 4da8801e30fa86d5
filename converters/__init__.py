"""converters: EPU files -> typed domain models -> SmartEM request models. Pure: no network, threads or
globals.

Public API (names are stable; other parts build on them):

* ``classify_path(path) -> EpuPath | None`` - name-only classification (``EpuFileKind``, natural ids from the
  file name and parent folders, ``session_root`` / ``atlas_root``, file-name ``timestamp``). Never touches
  disk.
* ``parse_file(path, *, path_map=None, max_bytes=DEFAULT_MAX_BYTES, epu_path=None) -> ParsedFile`` - one typed
  result per kind: ``ParsedSession`` (acquisition + grid), ``ParsedGridSquareMetadata`` (square + foil holes),
  ``ParsedGridSquareImage``, ``ParsedFoilHoleImage``, ``ParsedMicrograph``, ``ParsedFractions``,
  ``ParsedAtlas`` (atlas, tiles, tile/square positions, atlas-derived squares), ``ParsedAtlasImage``,
  ``ParsedAtlasTile``, ``ParsedSample``, ``ParsedScreeningSession``. Each has ``.kind``, ``.path``,
  ``.epu_path``, ``.warnings`` and ``.entities()``. ``parse_bytes(data, epu_path, ...)`` parses bytes already
  read.
* Errors (``converters.errors``): ``ConverterError`` > ``IncompleteFileError`` (retry later),
  ``MalformedFileError`` (names file + element), ``UnsafeFileError`` (DOCTYPE/entities, size cap),
  ``UnknownFileError`` (not an EPU kind). lxml errors never escape.
* Domain models (``converters.models``): ``AcquisitionData``, ``GridData``, ``AtlasData``, ``AtlasTileData``,
  ``AtlasTileGridSquarePositionData``, ``GridSquareData``, ``FoilHoleData``, ``MicrographData``, plus
  ``ImageMetadata``, ``StagePosition``, ``FractionsData``, ``SampleData``, ``ScreeningSessionData``. SI units
  with the unit in the field name; natural ids and parent natural ids on every entity; ``uuid`` / parent-uuid
  fields that the agent fills before conversion.
* Linking keys: acquisition and grid by ``session_root`` (EPU id ``session_id``); grid square by
  ``gridsquare_id`` (parent: ``session_root``); foil hole by ``foilhole_id`` (parent: ``gridsquare_id``);
  micrograph by its file stem ``micrograph_id`` (parent: ``foilhole_id``); atlas by the local path of its
  ``Atlas.dm`` (``atlas_path``), which a session names through ``AcquisitionData.atlas_local_path``; tiles by
  ``tile_id`` (parent: ``atlas_id``).
* Merging (``converters.merge``): ``PROVIDED_FIELDS`` / ``provided_fields(model_type, kind)`` (which fields
  each file kind provides per model) and ``merge(current, update, kind)`` for grid squares, foil holes,
  micrographs and tiles (newest foil-hole image wins without losing the ``.dm``'s position, diameter and
  flags); ``image_version(timestamp)`` is that one "newest image wins" rule, which the agent's store applies
  too.
* Paths: ``PathMap`` (Windows prefix -> local folder), ``locate_atlas`` (sibling ``atlas/`` trees when
  unmapped).
* ``validate_folder(dir) -> ValidationReport`` - structural check of an EPU folder (``em-agent validate``).
* ``EntityConverter``: the six static methods of SmartEM's reference plus ``atlas_tile_to_request`` and
  ``tile_position_to_request``; request models live in ``converters.requests``.
"""

from converters.entity_converter import EntityConverter
from converters.errors import (
    ConverterError,
    IncompleteFileError,
    MalformedFileError,
    UnknownFileError,
    UnsafeFileError,
)
from converters.merge import PROVIDED_FIELDS, image_version, is_newer_foilhole_image, merge, provided_fields
from converters.models import (
    AcquisitionData,
    AcquisitionTemplateArea,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    FoundHole,
    Fractionation,
    FractionsData,
    GridData,
    GridSquareData,
    ImageMetadata,
    MicrographData,
    SampleData,
    ScreeningSessionData,
    StagePosition,
    Vector2,
)
from converters.parse import (
    DEFAULT_MAX_BYTES,
    ParsedAtlas,
    ParsedAtlasImage,
    ParsedAtlasTile,
    ParsedFile,
    ParsedFoilHoleImage,
    ParsedFractions,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSample,
    ParsedScreeningSession,
    ParsedSession,
    parse_bytes,
    parse_file,
)
from converters.paths import (
    EpuFileKind,
    EpuPath,
    PathMap,
    classify_path,
    locate_atlas,
    parse_micrograph_stem,
    parse_name_timestamp,
)
from converters.validate import ValidationReport, validate_folder

__all__ = [
    "DEFAULT_MAX_BYTES",
    "PROVIDED_FIELDS",
    "AcquisitionData",
    "AcquisitionTemplateArea",
    "AtlasData",
    "AtlasTileData",
    "AtlasTileGridSquarePositionData",
    "ConverterError",
    "EntityConverter",
    "EpuFileKind",
    "EpuPath",
    "FoilHoleData",
    "FoundHole",
    "Fractionation",
    "FractionsData",
    "GridData",
    "GridSquareData",
    "ImageMetadata",
    "IncompleteFileError",
    "MalformedFileError",
    "MicrographData",
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
    "PathMap",
    "SampleData",
    "ScreeningSessionData",
    "StagePosition",
    "UnknownFileError",
    "UnsafeFileError",
    "ValidationReport",
    "Vector2",
    "classify_path",
    "image_version",
    "is_newer_foilhole_image",
    "locate_atlas",
    "merge",
    "parse_bytes",
    "parse_file",
    "parse_micrograph_stem",
    "parse_name_timestamp",
    "provided_fields",
    "validate_folder",
]
