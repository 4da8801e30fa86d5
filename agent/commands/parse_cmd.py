"""``em-agent parse PATH [--json]`` and ``em-agent validate DIR``: the converters from the command line.

``parse`` prints what one EPU file, or every EPU file under a folder, parses into (a one-line summary per
file, or one JSON object per line with ``--json``); exit 1 if any file fails. ``validate`` checks an EPU
folder's structure and exits 1 with the list of problems; what a partial or archived folder lacks (and the
parents an import would build from file paths) is listed as findings, worded as ``ingest --once`` reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from converters import (
    DEFAULT_MAX_BYTES,
    ConverterError,
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
    PathMap,
    classify_path,
    parse_file,
)
from converters.models import ImageMetadata
from converters.validate import validate_folder

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``parse`` and ``validate`` sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--path-map",
        action="append",
        default=[],
        metavar="WINDOWS_PREFIX=LOCAL_DIR",
        help="map Windows paths written by EPU to local folders (repeatable), e.g. 'Z:\\=/mnt/epu'",
    )
    common.add_argument(
        "--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="refuse files larger than this (bytes)"
    )
    parse = subparsers.add_parser(
        "parse", parents=[common], help="parse an EPU file or folder and print the models"
    )
    parse.add_argument("path", type=Path, help="an EPU file, or a folder to parse recursively")
    parse.add_argument("--json", action="store_true", help="one JSON object per file (JSON lines)")
    parse.set_defaults(func=run_parse)
    validate = subparsers.add_parser(
        "validate", parents=[common], help="check the structure of an EPU folder; exit 1 on problems"
    )
    validate.add_argument("dir", type=Path, help="an EPU session or atlas screening folder")
    validate.add_argument("--quiet", action="store_true", help="print problems only, not notes")
    validate.set_defaults(func=run_validate)


def _path_map(args: argparse.Namespace) -> PathMap | None:
    specs: list[str] = args.path_map
    return PathMap.parse(specs) if specs else None


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        found.extend(Path(folder) / name for name in sorted(names) if classify_path(Path(folder) / name))
    return found


def _fmt(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _image_summary(image: ImageMetadata) -> str:
    return (
        f"pixel {_fmt(image.pixel_size_a)} A, dose {_fmt(image.dose_e_per_a2, digits=2)} e/A^2, "
        f"defocus {_fmt(image.defocus_m, 1e6)} um, "
        f"{image.software_name or '?'} {image.software_version or '?'}"
    )


def summarise(result: ParsedFile) -> str:
    """One human-readable line for a parse result."""
    match result:
        case ParsedSession(acquisition=acq):
            return (
                f"session {acq.session_id} {acq.name!r} EPU {acq.epu_version or '?'}: "
                f"{len(acq.gridsquare_ids)} grid squares, "
                f"atlas {acq.atlas_local_path or acq.atlas_path or '-'}"
            )
        case ParsedGridSquareMetadata(gridsquare=square, foilholes=holes):
            imaged = sum(1 for hole in holes if hole.micrograph_ids)
            return (
                f"grid square {square.gridsquare_id} ({square.state or '?'}): "
                f"{len(holes)} foil holes, {imaged} with micrographs"
            )
        case ParsedGridSquareImage(image=image):
            return f"grid-square image of {result.epu_path.gridsquare_id or '?'}: {_image_summary(image)}"
        case ParsedFoilHoleImage(foilhole=hole, image=image):
            return f"foil-hole image of {hole.foilhole_id}: {_image_summary(image)}"
        case ParsedMicrograph(micrograph=micrograph):
            image = micrograph.image or ImageMetadata()
            return f"micrograph {micrograph.micrograph_id}: {_image_summary(image)}"
        case ParsedFractions(micrograph_id=micrograph_id, fractions=fractions):
            return f"fractions of {micrograph_id}: {fractions.fraction_count} fractions, {fractions.detector}"
        case ParsedAtlas(atlas=atlas):
            return (
                f"atlas {atlas.atlas_id} {atlas.name!r}: {len(atlas.tiles)} tiles, "
                f"{len(result.gridsquares)} grid-square nodes"
            )
        case ParsedAtlasImage(atlas_id=atlas_id, image=image):
            return f"stitched atlas {atlas_id}: {_image_summary(image)}"
        case ParsedAtlasTile(tile=tile):
            return f"atlas tile {tile.tile_id} #{tile.tile_index} of atlas {tile.atlas_id}"
        case ParsedSample(sample=sample):
            return f"sample {sample.sample_id} {sample.name!r} slot {sample.slot_id}"
        case ParsedScreeningSession(screening=screening):
            return (
                f"screening session {screening.screening_id} {screening.name!r}: "
                f"{len(screening.samples)} samples"
            )
    return result.kind.value  # pragma: no cover - every kind is matched above


def run_parse(args: argparse.Namespace) -> int:
    """Handler of ``em-agent parse``."""
    root: Path = args.path
    if not root.exists():
        print(f"em-agent parse: {root}: no such file or directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        path_map = _path_map(args)
    except ValueError as exc:
        print(f"em-agent parse: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = _files(root)
    if not files:
        print(f"em-agent parse: no EPU files under {root}", file=sys.stderr)
        return EXIT_FAILURE
    failures = 0
    for path in files:
        try:
            result = parse_file(path, path_map=path_map, max_bytes=args.max_bytes)
        except ConverterError as exc:
            failures += 1
            if args.json:
                error: dict[str, Any] = {
                    "path": str(path),
                    "error": type(exc).__name__,
                    "message": exc.detail,
                }
                print(json.dumps(error))
            else:
                print(f"ERROR {path}: {type(exc).__name__}: {exc.detail}")
            continue
        if args.json:
            print(result.model_dump_json())
        else:
            print(f"{path}: {summarise(result)}")
            for warning in result.warnings:
                print(f"  warning: {warning}")
    if len(files) > 1:
        print(f"{len(files) - failures} of {len(files)} files parsed", file=sys.stderr)
    return EXIT_FAILURE if failures else EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Handler of ``em-agent validate``."""
    try:
        path_map = _path_map(args)
    except ValueError as exc:
        print(f"em-agent validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = validate_folder(args.dir, path_map=path_map, max_bytes=args.max_bytes)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(report.counts.items())) or "no EPU files"
    if not args.quiet:
        for note in report.notes:
            print(f"note: {note}")
    # What the folder lacks (an import still works) is shown even with --quiet: it is what a user must know.
    for finding in report.findings:
        print(f"finding: {finding}")
    if report.ok:
        print(f"OK {report.root}: {report.files_checked} files checked ({counts})")
        return EXIT_OK
    print(
        f"INVALID {report.root}: {len(report.problems)} problem(s) in {report.files_checked} files ({counts})"
    )
    for problem in report.problems:
        print(f"problem: {problem}")
    return EXIT_FAILURE


__all__ = ["register", "run_parse", "run_validate", "summarise"]
