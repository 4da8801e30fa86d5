"""What a partial or archived EPU folder lacks: the findings ``ingest --once`` reports and ``validate`` lists.

Folders are often not what EPU wrote on the microscope PC: ``Metadata/`` stays behind while ``Images-Disc1``
goes to storage, only the ``Data/`` folders are copied, an archive keeps what processing needs. None of this
stops an import (the agent builds the missing parents from what the paths say), but a user should know what
the backend will lack. Both commands word each finding the same way through the functions below; ``ingest``
says what it did ("synthesized"), ``validate`` what an import would do ("would be built").
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_DISC_FOLDER_RE = re.compile(r"^Images-Disc\d+$", re.IGNORECASE)


class FindingCode(enum.StrEnum):
    """Kinds of findings (stable names for ``--json`` output and tests)."""

    NO_EPU_FILES = "no_epu_files"
    NO_SESSION_FILE = "no_session_file"
    NO_METADATA = "no_metadata"
    ATLAS_NOT_FOUND = "atlas_not_found"
    PARENTS_SYNTHESIZED = "parents_synthesized"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a folder lacks, where, and what it means for the import."""

    code: FindingCode
    folder: str
    message: str

    def __str__(self) -> str:
        return f"{self.folder}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"code": self.code.value, "folder": self.folder, "message": self.message}


def has_image_discs(folder: Path) -> bool:
    """Whether ``folder`` holds an ``Images-Disc<N>`` folder (an EPU session's images, with or without the
    session file)."""
    try:
        return any(child.is_dir() and _DISC_FOLDER_RE.match(child.name) for child in folder.iterdir())
    except OSError:
        return False


def no_epu_files(folder: str | Path) -> Finding:
    """The folder holds no EPU file at all (the wrong folder, or an empty copy)."""
    return Finding(FindingCode.NO_EPU_FILES, str(folder), "no EPU files found")


def session_folder_findings(
    folder: str | Path,
    *,
    has_session_file: bool,
    has_metadata: bool,
    atlas_path: str | None,
    atlas_found: bool,
) -> list[Finding]:
    """What one session folder lacks: ``EpuSession.dm``, ``Metadata/``, the atlas its session file names."""
    where = str(folder)
    out: list[Finding] = []
    if not has_session_file:
        out.append(
            Finding(
                FindingCode.NO_SESSION_FILE,
                where,
                "no EpuSession.dm: the acquisition and its grid are named after the folder, without start "
                "time, instrument or atlas",
            )
        )
    if not has_metadata:
        out.append(
            Finding(
                FindingCode.NO_METADATA,
                where,
                "no Metadata/: grid squares and foil holes lack their positions, states and near-grid-bar "
                "flags; holes without a FoilHoles/ image are known only from their micrographs' names",
            )
        )
    if atlas_path and not atlas_found:
        out.append(
            Finding(
                FindingCode.ATLAS_NOT_FOUND,
                where,
                f"atlas not found: {atlas_path} (configure a path map): no atlas, atlas tiles "
                "or grid-square positions on the atlas",
            )
        )
    return out


def parents_finding(folder: str | Path, counts: Mapping[str, int], *, done: bool) -> Finding | None:
    """How many parents were (``done``) or would be built from their children's paths, by kind; ``None`` if
    none."""
    total = sum(counts.values())
    if not total:
        return None
    by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()) if n)
    verb = "synthesized" if done else "would be built"
    return Finding(
        FindingCode.PARENTS_SYNTHESIZED,
        str(folder),
        f"{total} parent(s) {verb} from file paths, their own files missing ({by_kind})",
    )


__all__ = [
    "Finding",
    "FindingCode",
    "has_image_discs",
    "no_epu_files",
    "parents_finding",
    "session_folder_findings",
]
