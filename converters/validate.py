"""Structural check of an EPU folder (session or atlas screening): what ``em-agent validate`` reports.

Every EPU file in the tree is classified and parsed; parse failures are problems, and so are broken links
between files (a grid-square ``.dm``, image folder or micrograph that the session or the square does not list,
a file whose content contradicts its name). Things that are normal in a live or partial session (no
``Metadata/`` yet, an atlas outside the folder that cannot be found) are reported as notes, not problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from converters._xml import DEFAULT_MAX_BYTES
from converters.errors import ConverterError, IncompleteFileError
from converters.parse import ParsedFile, ParsedGridSquareMetadata, ParsedSession, parse_file
from converters.paths import EpuFileKind, PathMap, classify_path

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
    is_session = (base / "EpuSession.dm").is_file()
    is_atlas = (base / "ScreeningSession.dm").is_file() or (base / "Atlas" / "Atlas.dm").is_file()
    if not is_session and not is_atlas:
        report.problems.append(
            f"{base}: neither EpuSession.dm nor ScreeningSession.dm / Atlas/Atlas.dm found"
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
    return report


def _check_session(base: Path, parsed: list[ParsedFile], report: ValidationReport) -> None:
    """Cross-file links inside one EPU session folder."""
    sessions = [p for p in parsed if isinstance(p, ParsedSession) and Path(p.path).parent == base]
    if not sessions:
        return  # the EpuSession.dm failed to parse: already a problem
    session = sessions[0]
    listed = set(session.acquisition.gridsquare_ids)
    if not (base / "Metadata").is_dir():
        report.notes.append(f"{base}: no Metadata/ folder (normal at the start of a session)")
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


__all__ = ["ValidationReport", "validate_folder"]
