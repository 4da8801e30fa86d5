"""Structural check of an EPU folder (session or atlas screening): what ``em-agent validate`` reports.

Every EPU file in the tree is classified and parsed; parse failures are problems, and so are broken links
between files (a grid-square ``.dm``, image folder or micrograph that the session or the square does not list,
a file whose content contradicts its name). Things that are normal in a live, partial or archived session (no
``EpuSession.dm``, no ``Metadata/``, an atlas outside the folder that cannot be found, parents whose own files are
missing and that an import builds from their children's paths) are *findings*, worded as ``ingest --once``
reports them (:mod:`converters.findings`), not problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from converters._xml import DEFAULT_MAX_BYTES
from converters.errors import ConverterError, IncompleteFileError
from converters.findings import (
    Finding,
    has_image_discs,
    no_epu_files,
    parents_finding,
    session_folder_findings,
)
from converters.parse import (
    ParsedAtlas,
    ParsedFile,
    ParsedFoilHoleImage,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSession,
    parse_file,
)
from converters.paths import EpuFileKind, PathMap, classify_path, locate_atlas

_IGNORED_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".mrc", ".tif", ".tiff", ".eer", ".log", ".gain", ".txt"}
)


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_folder`: ``ok`` when there is no problem."""

    root: str
    files_checked: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Parsed files by kind."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    """What the folder lacks and what an import will build instead (not problems)."""

    @property
    def ok(self) -> bool:
        """No problems found."""
        return not self.problems


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        files.extend(Path(folder) / name for name in sorted(names))
    return files


def validate_folder(
    root: str | os.PathLike[str], *, path_map: PathMap | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ValidationReport:
    """Check an EPU session folder (``EpuSession.dm``) or atlas screening folder and report every problem."""
    base = Path(root)
    report = ValidationReport(root=str(base))
    if not base.is_dir():
        report.problems.append(f"{base}: not a directory")
        return report
    has_session_file = (base / "EpuSession.dm").is_file()
    # A session folder without its EpuSession.dm (an archive or copy of Images-Disc<N>) still imports.
    is_session = has_session_file or has_image_discs(base)
    is_atlas = (base / "ScreeningSession.dm").is_file() or (base / "Atlas" / "Atlas.dm").is_file()
    if not is_session and not is_atlas:
        report.problems.append(
            f"{base}: neither EpuSession.dm, Images-Disc<N>/ nor ScreeningSession.dm / Atlas/Atlas.dm found"
        )

    parsed: list[ParsedFile] = []
    for path in _walk(base):
        info = classify_path(path)
        if info is None:
            if path.suffix.lower() not in _IGNORED_SUFFIXES:
                report.notes.append(f"{path}: not an EPU file kind, ignored")
            continue
        report.files_checked += 1
        try:
            result = parse_file(path, path_map=path_map, max_bytes=max_bytes, epu_path=info)
        except IncompleteFileError as exc:
            report.problems.append(f"{path}: incomplete ({exc.detail})")
            continue
        except ConverterError as exc:
            report.problems.append(f"{path}: {type(exc).__name__}: {exc.detail}")
            continue
        report.counts[result.kind.value] = report.counts.get(result.kind.value, 0) + 1
        report.notes.extend(f"{path}: {warning}" for warning in result.warnings)
        parsed.append(result)

    if is_session:
        _check_session(base, parsed, report)
        _session_findings(base, parsed, report, path_map, max_bytes)
    elif not report.files_checked:
        report.findings.append(no_epu_files(base))
    return report


def _session_findings(
    base: Path, parsed: list[ParsedFile], report: ValidationReport, path_map: PathMap | None, max_bytes: int
) -> None:
    """What the session folder lacks, and the parents an import would build from their children's paths."""
    sessions = [p for p in parsed if isinstance(p, ParsedSession) and Path(p.path).parent == base]
    atlas_path = sessions[0].acquisition.atlas_path if sessions else None
    atlas_local = sessions[0].acquisition.atlas_local_path if sessions else None
    if atlas_path and atlas_local is None:
        atlas_local_path = locate_atlas(atlas_path, str(base), path_map)
        atlas_local = None if atlas_local_path is None else str(atlas_local_path)
    atlas_found = atlas_local is not None and Path(atlas_local).is_file()
    report.findings.extend(
        session_folder_findings(
            base,
            has_session_file=bool(sessions),
            has_metadata=(base / "Metadata").is_dir(),
            atlas_path=atlas_path,
            atlas_found=atlas_found,
        )
    )
    atlas_squares: set[str] = set()
    if atlas_found and atlas_local is not None:
        try:
            atlas = parse_file(atlas_local, path_map=path_map, max_bytes=max_bytes)
        except ConverterError as exc:
            report.problems.append(f"{atlas_local}: {type(exc).__name__}: {exc.detail}")
        else:
            if isinstance(atlas, ParsedAtlas):
                atlas_squares = {sq.gridsquare_id for sq in atlas.gridsquares}
    counts = missing_parents(parsed, has_session_file=bool(sessions), atlas_squares=atlas_squares)
    finding = parents_finding(base, counts, done=False)
    if finding is not None:
        report.findings.append(finding)


def missing_parents(
    parsed: list[ParsedFile], *, has_session_file: bool, atlas_squares: set[str] | None = None
) -> dict[str, int]:
    """Per kind, the parents of one session folder's entities that no file describes (what an import builds).

    Foil holes come from grid-square ``.dm`` files and ``FoilHoles/`` images, grid squares from ``.dm`` files,
    grid-square images and the atlas; a micrograph whose hole none of those describes needs a built hole, a
    hole whose square none describes a built square, and a folder without ``EpuSession.dm`` a built grid and
    acquisition.
    """
    holes: set[str] = set()
    squares: set[str] = set(atlas_squares or ())
    hole_square: dict[str, str] = {}
    needed_holes: dict[str, str | None] = {}
    for result in parsed:
        if isinstance(result, ParsedGridSquareMetadata):
            squares.add(result.gridsquare.gridsquare_id)
            for hole in result.foilholes:
                holes.add(hole.foilhole_id)
                if hole.gridsquare_id:
                    hole_square[hole.foilhole_id] = hole.gridsquare_id
        elif isinstance(result, ParsedGridSquareImage) and result.gridsquare is not None:
            squares.add(result.gridsquare.gridsquare_id)
        elif isinstance(result, ParsedFoilHoleImage):
            holes.add(result.foilhole.foilhole_id)
            if result.foilhole.gridsquare_id:
                hole_square[result.foilhole.foilhole_id] = result.foilhole.gridsquare_id
        elif isinstance(result, ParsedMicrograph):
            needed_holes[result.micrograph.foilhole_id] = result.micrograph.gridsquare_id
    built_holes = {h: sq for h, sq in needed_holes.items() if h not in holes and sq}
    needed_squares = set(hole_square.values()) | set(built_holes.values())
    built_squares = {sq for sq in needed_squares if sq is not None and sq not in squares}
    counts = {"foilhole": len(built_holes), "gridsquare": len(built_squares)}
    if not has_session_file and (squares or built_squares or holes or built_holes):
        counts.update(grid=1, acquisition=1)
    return {kind: n for kind, n in counts.items() if n}


def _check_session(base: Path, parsed: list[ParsedFile], report: ValidationReport) -> None:
    """Cross-file links inside one EPU session folder."""
    sessions = [p for p in parsed if isinstance(p, ParsedSession) and Path(p.path).parent == base]
    if not sessions:
        return  # the EpuSession.dm failed to parse: already a problem
    session = sessions[0]
    listed = set(session.acquisition.gridsquare_ids)
    squares = {p.gridsquare.gridsquare_id: p for p in parsed if isinstance(p, ParsedGridSquareMetadata)}
    for gs_id, square in sorted(squares.items()):
        if gs_id not in listed:
            report.problems.append(f"{square.path}: grid square {gs_id} is not listed in EpuSession.dm")
    holes_by_square = {gs_id: {h.foilhole_id for h in sq.foilholes} for gs_id, sq in squares.items()}
    for result in parsed:
        info = result.epu_path
        if info.kind not in (
            EpuFileKind.GRIDSQUARE_IMAGE,
            EpuFileKind.FOILHOLE_IMAGE,
            EpuFileKind.MICROGRAPH,
            EpuFileKind.FRACTIONS,
        ):
            continue
        if info.gridsquare_id is None or info.session_root is None:
            report.problems.append(f"{result.path}: not inside Images-Disc<N>/GridSquare_<id>/")
            continue
        if info.gridsquare_id not in listed:
            report.problems.append(
                f"{result.path}: grid square {info.gridsquare_id} is not listed in EpuSession.dm"
            )
            continue
        holes = holes_by_square.get(info.gridsquare_id)
        if holes is not None and info.foilhole_id is not None and info.foilhole_id not in holes:
            report.problems.append(
                f"{result.path}: foil hole {info.foilhole_id} is not in GridSquare_{info.gridsquare_id}.dm"
            )
        parent = Path(result.path).parent.name.lower()
        expected = {
            EpuFileKind.FOILHOLE_IMAGE: "foilholes",
            EpuFileKind.MICROGRAPH: "data",
            EpuFileKind.FRACTIONS: "data",
        }.get(info.kind)
        if expected is not None and parent != expected:
            report.problems.append(
                f"{result.path}: {info.kind.value} file outside a {expected.title()}/ folder"
            )


__all__ = ["ValidationReport", "missing_parents", "validate_folder"]
