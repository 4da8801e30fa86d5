"""Parse any EPU file into typed results: ``parse_file(path) -> ParsedFile``.

One result type per :class:`~converters.paths.EpuFileKind`; each carries the path, its :class:`EpuPath`, the
domain models it yields (``entities()``), and ``warnings`` for recoverable oddities (a node without a centre,
the lacey-grid fallback). Failures are :mod:`converters.errors` exceptions only.

One module per file kind, behind :func:`parse_bytes`'s dispatch table: :mod:`.session` (``EpuSession.dm``),
:mod:`.gridsquare` (grid-square ``.dm`` and image), :mod:`.foilhole` (foil-hole images), :mod:`.micrograph`
(micrograph XMLs and ``_Fractions.xml``), :mod:`.atlas` (``Atlas.dm``, atlas and tile images, ``Sample.dm``,
``ScreeningSession.dm``); :mod:`.image` reads the ``MicroscopeImage`` document every image kind shares,
:mod:`._common` holds the Clark names and small value readers, :mod:`.results` the result types.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from converters._xml import DEFAULT_MAX_BYTES, Reader, load_bytes, mentions_ref, parse_xml
from converters.errors import MalformedFileError, UnknownFileError
from converters.parse.atlas import (
    _parse_atlas,
    _parse_atlas_image,
    _parse_sample,
    _parse_screening,
    _parse_tile_image,
)
from converters.parse.foilhole import _parse_foilhole_image
from converters.parse.gridsquare import _parse_gridsquare_dm, _parse_gridsquare_image
from converters.parse.image import _image_metadata  # noqa: F401  (kept importable here: tests read images with it)
from converters.parse.micrograph import _parse_fractions, _parse_micrograph
from converters.parse.results import (
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
)
from converters.parse.session import _parse_session
from converters.paths import EpuFileKind, EpuPath, PathMap, classify_path

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
