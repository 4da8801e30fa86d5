"""Saving acquired images under a root directory (the agent's state directory), confined to it.

``take_image`` stores what it acquired here and answers with the id, the path, the size and the acquisition
metadata. Caller-supplied sub-directories and file names are checked so nothing is written outside ``root``
(no ``..``, no absolute paths, no symlink escapes). Files are written atomically (temporary name, then rename)
with a JSON metadata sidecar, so a crash never leaves a half-written image under the final name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, Field

from agent.devices.models import AcquisitionResult

__all__ = ["SavedImage", "UnsafePathError", "resolve_under", "save_image"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


class UnsafePathError(ValueError):
    """A requested path would leave the image root (traversal, absolute path, odd name)."""


class SavedImage(BaseModel):
    """What ``take_image`` reports: JSON-serialisable."""

    image_id: str
    path: str = Field(description="Absolute path of the saved image.")
    relative_path: str = Field(description="Path relative to the image root (POSIX separators).")
    size_bytes: int
    metadata_path: str = Field(description="Absolute path of the JSON metadata sidecar.")
    metadata: dict[str, Any]


def resolve_under(root: Path, relative: str) -> Path:
    """Resolve ``relative`` (POSIX or Windows separators) under ``root`` or raise :class:`UnsafePathError`."""
    if not relative or "\x00" in relative:
        raise UnsafePathError(f"invalid path {relative!r}")
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or ":" in relative:
        raise UnsafePathError(f"absolute paths are not allowed: {relative!r}")
    parts = [p for p in re.split(r"[\\/]+", relative) if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafePathError(f"path must stay under the image root: {relative!r}")
    for part in parts:
        if not _SAFE_NAME.match(part):
            raise UnsafePathError(f"unsafe path component {part!r} (letters, digits, '.', '_', '-')")
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if not candidate.is_relative_to(base):
        raise UnsafePathError(f"path escapes the image root via a link: {relative!r}")
    return candidate


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_image(
    root: Path,
    result: AcquisitionResult,
    image: bytes,
    *,
    subdir: str | None = None,
    filename: str | None = None,
    overwrite: bool = False,
) -> SavedImage:
    """Save ``image`` (the downloaded artifact of ``result``) under ``root``.

    ``subdir`` (default ``images``) and ``filename`` (default ``<image_id>.png``) are confined to ``root``.
    An existing file is never replaced unless ``overwrite``; the error names it.
    """
    image_id = result.image_id or "image"
    name = filename or f"{image_id}.png"
    if "/" in name or "\\" in name:
        raise UnsafePathError(f"filename must not contain separators: {name!r}")
    root.mkdir(parents=True, exist_ok=True)
    target = resolve_under(root, f"{subdir or 'images'}/{name}")
    if target.exists() and not overwrite:
        raise FileExistsError(f"image file already exists: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Re-check after creating directories: a directory swapped for a link must not redirect the write.
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"path escapes the image root: {target}")
    metadata = result.metadata()
    sidecar = target.with_name(target.name + ".json")
    _write_atomic(target, image)
    _write_atomic(sidecar, json.dumps(metadata, indent=2, sort_keys=True).encode())
    return SavedImage(
        image_id=image_id,
        path=str(target),
        relative_path=target.relative_to(root.resolve()).as_posix(),
        size_bytes=len(image),
        metadata_path=str(sidecar),
        metadata=metadata,
    )
