"""epuplayer-compatible recordings: the format, read and written.

Format (smartem-reference.md section 15): a gzip tar holding ``recording.json`` (``{"metadata": {...},
"events": [...]}``, written with ``indent=2``) and ``chunks/chunk_<N>.bin`` for binary or large content. A plain
JSON file of the same shape is the legacy form and is read too. Events carry only ``EPUEvent`` keys, so
recordings made here replay with epuplayer and epuplayer's replay here.

* :class:`Recording` loads and saves archives. A recording from a newer or different recorder may carry event
  kinds or fields this module does not know: they are reported (:attr:`Recording.warnings`) and skipped, not
  fatal. Events on the recorded folder itself (path ``.``, as epuplayer's recorder writes for the watched
  folder's own directory events) apply to the replay folder itself.

:mod:`testbed.epu.replayer` replays a recording into a folder; :mod:`testbed.epu.recorder` records a live
folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

EventType = Literal[
    "initial_dir", "initial_file", "created", "modified", "deleted", "moved", "appended", "truncated"
]
INLINE_LIMIT = 1024 * 1024
"""Text content up to this size is stored inline; larger content goes to a chunk (as epuplayer does)."""
TEXT_EXTENSIONS = frozenset({"xml", "dm", "txt", "json", "log"})
BINARY_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "tif", "tiff", "mrc", "dat", "eer"})


class RecordingError(Exception):
    """A recording that cannot be read, or a replay that cannot be applied."""


class EPUEvent(BaseModel):
    """One recorded file-system event; exactly epuplayer's ``EPUEvent`` fields (extra keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: float
    event_type: EventType
    src_path: str
    """Relative to the watch folder, POSIX form."""
    dest_path: str | None = None
    is_directory: bool = False
    content: str | None = None
    size: int | None = None
    content_hash: str | None = None
    binary_chunk_id: str | None = None
    operation_data: dict[str, Any] | None = None
    file_position: int | None = None
    is_placeholder: bool = False


_EVENT_FIELDS = frozenset(EPUEvent.model_fields)
_EVENT_TYPES = frozenset(get_args(EventType))


class RecordingMetadata(BaseModel):
    """``metadata`` of ``recording.json``."""

    model_config = ConfigDict(extra="allow")

    recorded_at: str
    watch_dir: str
    total_events: int = 0
    version: str = "2.0"
    platform: str = sys.platform


@dataclass
class Recording:
    """Events plus the binary chunks they reference."""

    metadata: RecordingMetadata
    events: list[EPUEvent] = field(default_factory=list)
    chunks: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What loading left out: unknown event fields (ignored) and unknown event kinds (their events skipped)."""
    skipped_events: int = 0
    """Events left out on load because their kind is unknown."""

    @classmethod
    def new(cls, watch_dir: str | os.PathLike[str]) -> Recording:
        """An empty recording of ``watch_dir``, stamped now."""
        return cls(
            RecordingMetadata(
                recorded_at=datetime.now(UTC).isoformat(), watch_dir=str(Path(watch_dir).resolve())
            )
        )

    def add_chunk(self, data: bytes) -> str:
        """Store ``data`` as the next chunk; returns its id (``chunk_<N>``)."""
        chunk_id = f"chunk_{len(self.chunks)}"
        self.chunks[chunk_id] = data
        return chunk_id

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recording:
        """Read a ``.tar.gz`` recording or a legacy plain-JSON one."""
        source = Path(path)
        try:
            if tarfile.is_tarfile(source):
                return cls._load_tar(source)
            return cls._from_json(json.loads(source.read_text(encoding="utf-8")), {}, source)
        except (OSError, tarfile.TarError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"cannot read recording {source}: {exc}") from exc

    @classmethod
    def _load_tar(cls, source: Path) -> Recording:
        chunks: dict[str, bytes] = {}
        document: dict[str, Any] | None = None
        with tarfile.open(source, "r:*") as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name)
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                if name.name == "recording.json" and len(name.parts) <= 2:
                    document = json.loads(handle.read().decode("utf-8"))
                elif name.parent.name == "chunks" and name.suffix == ".bin":
                    chunks[name.stem] = handle.read()
        if document is None:
            raise RecordingError(f"{source} has no recording.json")
        return cls._from_json(document, chunks, source)

    @classmethod
    def _from_json(cls, document: Any, chunks: dict[str, bytes], source: Path) -> Recording:
        if not isinstance(document, dict) or "metadata" not in document or "events" not in document:
            raise RecordingError(f"{source}: not an epuplayer recording (needs 'metadata' and 'events')")
        try:
            metadata = RecordingMetadata.model_validate(document["metadata"])
        except ValidationError as exc:
            raise RecordingError(f"{source}: invalid recording: {exc}".splitlines()[0]) from exc
        raw_events = document["events"]
        if not isinstance(raw_events, list):
            raise RecordingError(f"{source}: invalid recording: 'events' is not a list")
        events: list[EPUEvent] = []
        unknown_fields: Counter[str] = Counter()
        unknown_kinds: Counter[str] = Counter()
        for index, raw in enumerate(raw_events):
            if not isinstance(raw, dict):
                raise RecordingError(f"{source}: invalid recording: event {index} is not an object")
            extra = [name for name in raw if name not in _EVENT_FIELDS]
            unknown_fields.update(extra)
            data = {name: value for name, value in raw.items() if name in _EVENT_FIELDS}
            kind = data.get("event_type")
            if isinstance(kind, str) and kind not in _EVENT_TYPES:
                unknown_kinds[kind] += 1
                continue
            try:
                events.append(EPUEvent.model_validate(data))
            except ValidationError as exc:
                raise RecordingError(
                    f"{source}: invalid recording: event {index}: {exc}".splitlines()[0]
                ) from exc
        missing = {e.binary_chunk_id for e in events if e.binary_chunk_id} - set(chunks)
        if missing:
            raise RecordingError(f"{source}: events reference missing chunks {sorted(missing)[:5]}")
        warnings = [
            f"unknown event field {name!r} ignored ({n} event(s))"
            for name, n in sorted(unknown_fields.items())
        ]
        warnings.extend(
            f"unknown event kind {kind!r}: {n} event(s) skipped" for kind, n in sorted(unknown_kinds.items())
        )
        return cls(metadata, events, chunks, warnings, sum(unknown_kinds.values()))

    def to_json(self) -> dict[str, Any]:
        """The ``recording.json`` document."""
        metadata = self.metadata.model_copy(update={"total_events": len(self.events)})
        return {
            "metadata": metadata.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in self.events],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.tar.gz`` archive (``recording.json`` + ``chunks/chunk_<N>.bin``)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        document = json.dumps(self.to_json(), indent=2).encode("utf-8")
        tmp = target.with_name(f".{target.name}.tmp")
        with tarfile.open(tmp, "w:gz") as archive:
            _add_bytes(archive, "recording.json", document)
            for chunk_id, data in self.chunks.items():
                _add_bytes(archive, f"chunks/{chunk_id}.bin", data)
        tmp.replace(target)
        return target


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def sha256_hex(data: bytes) -> str:
    """SHA-256 hex digest, the recording's ``content_hash``."""
    return hashlib.sha256(data).hexdigest()


def folder_hashes(
    root: str | os.PathLike[str], *, ignore: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of every file under ``root`` (for replay checks)."""
    base = Path(root)
    result: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file():
            rel = path.relative_to(base).as_posix()
            if ignore is None or not ignore(rel):
                result[rel] = sha256_hex(path.read_bytes())
    return result


__all__ = [
    "BINARY_EXTENSIONS",
    "INLINE_LIMIT",
    "TEXT_EXTENSIONS",
    "EPUEvent",
    "EventType",
    "Recording",
    "RecordingError",
    "RecordingMetadata",
    "folder_hashes",
    "sha256_hex",
]
