"""EPU file kinds from names alone, Windows path mapping, and locating the atlas of a session.

:func:`classify_path` is cheap and never touches the disk: it looks at the file name and its parent folder
names (patterns of ``epu-format.md`` section 3, case-insensitive, 4- or 6-digit times) and returns an
:class:`EpuPath` with the kind, the natural ids the name carries and the session or atlas root.
:class:`PathMap` maps the Windows paths written inside the files (``AtlasId``, image paths, storage folder) to
local paths; :func:`locate_atlas` finds an atlas outside the session folder when no map is configured.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from pydantic import BaseModel, ConfigDict


class EpuFileKind(enum.StrEnum):
    """The EPU file kinds that ``converters`` recognises (``epu-format.md`` section 3)."""

    SESSION = "session"
    """``EpuSession.dm``."""
    GRIDSQUARE_METADATA = "gridsquare_metadata"
    """``Metadata/GridSquare_<id>.dm``."""
    GRIDSQUARE_IMAGE = "gridsquare_image"
    """``Images-Disc<N>/GridSquare_<id>/GridSquare_<date>_<time>.xml``."""
    FOILHOLE_IMAGE = "foilhole_image"
    """``.../FoilHoles/FoilHole_<fh>_<date>_<time>.xml``."""
    MICROGRAPH = "micrograph"
    """``.../Data/FoilHole_<fh>_Data_<a>_<b>_<date>_<time>.xml``."""
    FRACTIONS = "fractions"
    """``.../Data/FoilHole_<...>_Fractions.xml`` (camera software)."""
    ATLAS = "atlas"
    """``Atlas.dm`` (``Sample<k>/Atlas/Atlas.dm`` or the screening session's own)."""
    ATLAS_IMAGE = "atlas_image"
    """``Atlas_<atlasId>.xml`` (stitched atlas image)."""
    ATLAS_TILE = "atlas_tile"
    """``Tile_<tileId>_<n>_<atlasId>.xml``."""
    SAMPLE = "sample"
    """``Sample<k>/Sample.dm``."""
    SCREENING_SESSION = "screening_session"
    """``ScreeningSession.dm``."""


class EpuPath(BaseModel):
    """What a path's name says: kind, natural ids, the local session or atlas folder.

    Ids are the digit strings of the name (opaque). ``timestamp`` is the local time in the name (naive), when
    the kind has one. ``session_root`` is the EPU session folder (the one that holds or would hold
    ``EpuSession.dm``); ``atlas_root`` is the folder that holds (or would hold) ``Atlas.dm``.
    """

    model_config = ConfigDict(frozen=True)

    kind: EpuFileKind
    path: str
    gridsquare_id: str | None = None
    foilhole_id: str | None = None
    micrograph_id: str | None = None
    location_id: str | None = None
    setting_id: str | None = None
    atlas_id: str | None = None
    tile_id: str | None = None
    tile_index: int | None = None
    timestamp: datetime | None = None
    session_root: str | None = None
    atlas_root: str | None = None

    @property
    def natural_id(self) -> str | None:
        """The natural id of the entity this file describes (``None`` for session-level kinds)."""
        match self.kind:
            case EpuFileKind.GRIDSQUARE_METADATA | EpuFileKind.GRIDSQUARE_IMAGE:
                return self.gridsquare_id
            case EpuFileKind.FOILHOLE_IMAGE:
                return self.foilhole_id
            case EpuFileKind.MICROGRAPH | EpuFileKind.FRACTIONS:
                return self.micrograph_id
            case EpuFileKind.ATLAS_TILE:
                return self.tile_id
            case EpuFileKind.ATLAS_IMAGE:
                return self.atlas_id
            case _:
                return None


_TIME = r"(\d{8})_(\d{4}|\d{6})"
_FLAGS = re.IGNORECASE
_SESSION_RE = re.compile(r"^EpuSession\.dm$", _FLAGS)
_GS_DM_RE = re.compile(r"^GridSquare_(\d+)\.dm$", _FLAGS)
_GS_IMAGE_RE = re.compile(rf"^GridSquare_{_TIME}\.xml$", _FLAGS)
_FH_IMAGE_RE = re.compile(rf"^FoilHole_(\d+)_{_TIME}\.xml$", _FLAGS)
_MICROGRAPH_RE = re.compile(rf"^FoilHole_(\d+)_Data_(\d+)_(\d+)_{_TIME}\.xml$", _FLAGS)
_FRACTIONS_RE = re.compile(r"^(FoilHole_(\d+)_Data_.*)_Fractions\.xml$", _FLAGS)
_ATLAS_DM_RE = re.compile(r"^Atlas\.dm$", _FLAGS)
_ATLAS_IMAGE_RE = re.compile(r"^Atlas_(\d+)\.xml$", _FLAGS)
_TILE_RE = re.compile(r"^Tile_(\d+)_(\d+)_(\d+)\.xml$", _FLAGS)
_SAMPLE_RE = re.compile(r"^Sample\.dm$", _FLAGS)
_SCREENING_RE = re.compile(r"^ScreeningSession\.dm$", _FLAGS)
_GS_FOLDER_RE = re.compile(r"^GridSquare_(\d+)$", _FLAGS)
_DISC_FOLDER_RE = re.compile(r"^Images-Disc\d+$", _FLAGS)
_MICROGRAPH_STEM_RE = re.compile(rf"^FoilHole_(\d+)_Data_(\d+)_(\d+)_{_TIME}$", _FLAGS)


def _pure(path: str | os.PathLike[str]) -> PurePath:
    """A pure path that splits on the separators actually used (Windows paths can reach us on Linux)."""
    text = os.fspath(path)
    if "\\" in text and "/" not in text:
        return PureWindowsPath(text)
    return PurePosixPath(text) if os.sep == "/" else PureWindowsPath(text)


def parse_name_timestamp(date: str, time: str) -> datetime | None:
    """File-name ``yyyymmdd`` + ``hhmmss`` (EPU 1.x: ``hhmm``) as naive local time; ``None`` if invalid."""
    # Hand-rolled: strptime is slow and this runs for every micrograph name.
    try:
        if len(date) != 8 or len(time) not in (4, 6):
            return None
        seconds = int(time[4:6]) if len(time) == 6 else 0
        return datetime(int(date[:4]), int(date[4:6]), int(date[6:8]), int(time[:2]), int(time[2:4]), seconds)
    except ValueError:
        return None


def parse_micrograph_stem(stem: str) -> tuple[str, str, str, datetime | None] | None:
    """Split a micrograph stem into (foil-hole id, location id, setting id, timestamp), or ``None``."""
    match = _MICROGRAPH_STEM_RE.match(stem)
    if match is None:
        return None
    return match[1], match[2], match[3], parse_name_timestamp(match[4], match[5])


def _gridsquare_id(names: list[str], limit: int) -> str | None:
    """The id of the ``GridSquare_<id>`` folder among the nearest ``limit`` parents."""
    for name in names[:limit]:
        match = _GS_FOLDER_RE.match(name)
        if match:
            return match[1]
    return None


def _session_root_of_image(names: list[str], parents: list[str]) -> str | None:
    """The folder above ``Images-Disc<N>`` among the nearest four parents."""
    for index, name in enumerate(names[:4]):
        if _DISC_FOLDER_RE.match(name):
            # index + 1 exists: the list holds at least five parents or ends with the root or "." (whose
            # name, "", never matches).
            return parents[index + 1]
    return None


def _plain_posix_parents(text: str) -> list[str] | None:
    """``[str(p) for p in PurePosixPath(text).parents][:5]`` for a path that needs no normalisation, else None.

    Five parents are all that classification reads (the ``Images-Disc<N>`` folder sits at most four levels
    up, and its parent is the session folder).

    Plain means no backslash (PureWindowsPath territory), no empty or ``.`` component and no trailing slash:
    then every parent is a prefix of ``text`` cut at a ``/``, which string operations find several times
    faster than pathlib (``classify_path`` runs for every file event of a watched folder).
    """
    if (
        "\\" in text
        or "//" in text
        or "/./" in text
        or text.startswith("./")
        or text.endswith(("/", "/."))
        or text in ("", ".")
    ):
        return None
    parents: list[str] = []
    head = text
    while len(parents) < 5:
        head, sep, _ = head.rpartition("/")
        if not sep:
            parents.append(".")
            return parents
        if not head:
            parents.append("/")
            return parents
        parents.append(head)
    return parents


def classify_path(path: str | os.PathLike[str]) -> EpuPath | None:
    """Classify ``path`` by its name and parent folder names only (no disk access); ``None`` if not an EPU
    file.

    Patterns are anchored and case-insensitive; micrographs are anchored on ``_<date>_<time>.xml`` so that
    ``_Fractions.xml`` is not mistaken for one; ``GridSquare_<id>.dm`` and ``GridSquare_<date>_<time>.xml``
    are told apart by extension and the two-field form.
    """
    text = os.fspath(path)
    plain = _plain_posix_parents(text) if os.sep == "/" and isinstance(text, str) else None
    if plain is not None:
        # Same answers as the pathlib branch below: a parent's name is what follows its last "/" ("" for the
        # root and for ".").
        name = text.rpartition("/")[2]
        parents = plain
        names = [("" if parent == "." else parent.rpartition("/")[2]) for parent in plain]
        pure_parents: list[PurePath] | None = None
    else:
        pure = _pure(path)
        name = pure.name
        pure_parents = list(pure.parents)
        parents = [str(parent) for parent in pure_parents]
        names = [parent.name for parent in pure_parents]
    if not name:
        return None
    # Cheap first-character dispatch: most files in an EPU folder are micrographs, previews and fractions.
    first = name[0].lower()
    if first == "f":
        match = _MICROGRAPH_RE.match(name)
        if match:
            return EpuPath(
                kind=EpuFileKind.MICROGRAPH,
                path=text,
                foilhole_id=match[1],
                location_id=match[2],
                setting_id=match[3],
                micrograph_id=name[:-4],
                timestamp=parse_name_timestamp(match[4], match[5]),
                gridsquare_id=_gridsquare_id(names, 3),
                session_root=_session_root_of_image(names, parents),
            )
        match = _FRACTIONS_RE.match(name)
        if match:
            return EpuPath(
                kind=EpuFileKind.FRACTIONS,
                path=text,
                micrograph_id=match[1],
                foilhole_id=match[2],
                gridsquare_id=_gridsquare_id(names, 3),
                session_root=_session_root_of_image(names, parents),
            )
        match = _FH_IMAGE_RE.match(name)
        if match:
            return EpuPath(
                kind=EpuFileKind.FOILHOLE_IMAGE,
                path=text,
                foilhole_id=match[1],
                timestamp=parse_name_timestamp(match[2], match[3]),
                gridsquare_id=_gridsquare_id(names, 3),
                session_root=_session_root_of_image(names, parents),
            )
        return None
    if first == "g":
        match = _GS_DM_RE.match(name)
        if match:
            root = parents[1] if len(parents) > 1 and names[0].lower() == "metadata" else None
            return EpuPath(
                kind=EpuFileKind.GRIDSQUARE_METADATA, path=text, gridsquare_id=match[1], session_root=root
            )
        match = _GS_IMAGE_RE.match(name)
        if match:
            return EpuPath(
                kind=EpuFileKind.GRIDSQUARE_IMAGE,
                path=text,
                gridsquare_id=_gridsquare_id(names, 1),
                timestamp=parse_name_timestamp(match[1], match[2]),
                session_root=_session_root_of_image(names, parents),
            )
        return None
    parent_text = parents[0] if parents else None
    if first == "t":
        match = _TILE_RE.match(name)
        if match:
            return EpuPath(
                kind=EpuFileKind.ATLAS_TILE,
                path=text,
                tile_id=match[1],
                tile_index=int(match[2]),
                atlas_id=match[3],
                atlas_root=parent_text,
            )
        return None
    if first == "a":
        if _ATLAS_DM_RE.match(name):
            return EpuPath(kind=EpuFileKind.ATLAS, path=text, atlas_root=parent_text)
        match = _ATLAS_IMAGE_RE.match(name)
        if match:
            return EpuPath(kind=EpuFileKind.ATLAS_IMAGE, path=text, atlas_id=match[1], atlas_root=parent_text)
        return None
    if first == "e" and _SESSION_RE.match(name):
        return EpuPath(kind=EpuFileKind.SESSION, path=text, session_root=parent_text)
    if first == "s":
        if _SAMPLE_RE.match(name):
            atlas_root: str | None
            if pure_parents is None:
                atlas_root = str(PurePosixPath(parents[0]) / "Atlas")
            else:
                atlas_root = str(pure_parents[0] / "Atlas") if pure_parents else None
            return EpuPath(kind=EpuFileKind.SAMPLE, path=text, atlas_root=atlas_root)
        if _SCREENING_RE.match(name):
            return EpuPath(kind=EpuFileKind.SCREENING_SESSION, path=text, atlas_root=parent_text)
    return None


# ------------------------------------------------------------------------------------------------------------
# Windows path mapping
# ------------------------------------------------------------------------------------------------------------


def windows_parts(path: str) -> list[str]:
    """Components of a Windows (or POSIX) path written in an EPU file, drive included, no empty parts."""
    return [part for part in re.split(r"[\\/]+", path.strip()) if part]


class PathMap:
    """Maps Windows path prefixes written by EPU (``Z:\\nt32457-6``) to local folders.

    Matching is component-wise and case-insensitive (Windows semantics); the longest matching prefix wins.
    """

    def __init__(
        self, mapping: Mapping[str, str | os.PathLike[str]] | Iterable[tuple[str, str]] = ()
    ) -> None:
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        self._entries: list[tuple[list[str], Path]] = []
        for prefix, local in items:
            parts = [p.casefold() for p in windows_parts(str(prefix))]
            if not parts:
                raise ValueError(f"empty Windows prefix in path map: {prefix!r}")
            self._entries.append((parts, Path(local)))
        self._entries.sort(key=lambda entry: len(entry[0]), reverse=True)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> PathMap:
        """Build a map from ``"WINDOWS_PREFIX=LOCAL_DIR"`` strings (the CLI / config form)."""
        pairs: list[tuple[str, str]] = []
        for spec in specs:
            prefix, sep, local = spec.partition("=")
            if not sep or not prefix.strip() or not local.strip():
                raise ValueError(f"path map entry must be WINDOWS_PREFIX=LOCAL_DIR, got {spec!r}")
            pairs.append((prefix.strip(), local.strip()))
        return cls(pairs)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        entries = [("/".join(prefix), str(local)) for prefix, local in self._entries]
        return f"PathMap({entries!r})"

    def map(self, windows_path: str) -> Path | None:
        """The local path for ``windows_path``, or ``None`` when no prefix matches."""
        parts = windows_parts(windows_path)
        folded = [p.casefold() for p in parts]
        for prefix, local in self._entries:
            if folded[: len(prefix)] == prefix:
                return local.joinpath(*parts[len(prefix) :])
        return None


def _resolve_case_insensitive(base: Path, parts: list[str]) -> Path | None:
    """``base / parts`` on disk, matching each component case-insensitively (Windows names on Linux)."""
    current = base
    for part in parts:
        candidate = current / part
        if candidate.exists():
            current = candidate
            continue
        try:
            entries = [entry.name for entry in current.iterdir()]
        except OSError:
            return None
        folded = part.casefold()
        found = next((entry for entry in entries if entry.casefold() == folded), None)
        if found is None:
            return None
        current = current / found
    return current


def locate_atlas(
    atlas_path: str,
    session_root: str | os.PathLike[str] | None,
    path_map: PathMap | None = None,
    *,
    max_levels: int = 3,
) -> Path | None:
    """Find the local ``Atlas.dm`` that an ``EpuSession.dm`` ``AtlasId`` (a Windows path) points to.

    With a path map that matches, its answer is authoritative (returned even if the file does not exist yet).
    Otherwise the tail of the Windows path is looked up under the session folder and up to ``max_levels`` of
    its ancestors, longest tail first (``atlas\\Supervisor_...\\Sample4\\Atlas\\Atlas.dm`` under the visit
    folder, which also finds sibling ``atlas/`` trees; EPU 1.x ``<session>\\Atlas.dm`` inside the session
    folder), case-insensitively. Returns ``None`` when nothing is found. This touches the disk (unlike
    :func:`classify_path`).
    """
    if path_map:
        mapped = path_map.map(atlas_path)
        if mapped is not None:
            return mapped
    if session_root is None:
        return None
    parts = windows_parts(atlas_path)
    if parts and parts[0].endswith(":"):
        parts = parts[1:]  # the drive letter never exists locally
    if not parts:
        return None
    root = Path(session_root)
    bases = [root, *list(root.parents)[:max_levels]]
    for length in range(len(parts), 0, -1):
        tail = parts[-length:]
        for base in bases:
            if length == 1 and base != root:
                continue  # a bare "Atlas.dm" is only meaningful inside the session folder (EPU 1.x)
            found = _resolve_case_insensitive(base, tail)
            if found is not None and found.is_file():
                return found
    return None


__all__ = [
    "EpuFileKind",
    "EpuPath",
    "PathMap",
    "classify_path",
    "locate_atlas",
    "parse_micrograph_stem",
    "parse_name_timestamp",
    "windows_parts",
]
