"""The values that pass between the ingest stages: contributions, file records, outbox items, the outcome of
processing one file, and what a commit changed.

Kept apart from :mod:`agent.ingest.store` so that the contribution builder, the atlas join and the parser
processes share them without importing the store, and the store can join atlases without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.ingest.identity import EntityKind
from converters.parse import ParsedAtlas
from converters.paths import EpuPath

#: Source name and merge rank of a parent built from its children's paths: below every file's rank, so any real
#: source overrides every field it sets.
SYNTHESIZED_SOURCE = "synthesized"
SYNTHESIZED_RANK = -1

#: ``ingest_entities.synthesized`` values.
NOT_SYNTHESIZED, SYNTHESIZED_WAITING, SYNTHESIZED_COMPLETED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one source knows about one entity.

    Attributes:
        kind: the entity kind.
        uuid: the entity's deterministic UUID.
        acq_key: the acquisition key the entity belongs to.
        natural_id: EPU's natural id (the acquisition key for acquisitions and grids).
        parent_uuid: the parent entity's UUID (``None`` for an acquisition).
        source: the contributing source (one row per entity and source; a newer version replaces an older one).
        rank: merge order; a higher rank's fields override a lower rank's.
        order_key: version of this source's information; an older ``order_key`` never replaces a newer one (two
            foil-hole images of one hole: the newest by file-name timestamp wins whatever the arrival order).
        fields: the (JSON-serialisable) fields this source sets; merged in rank order and rendered into the
            wire payload by the ``render`` callable of :meth:`~agent.ingest.store.IngestStore.apply_contributions`.
        primary: whether this source makes the entity real. An entity known only from secondary sources (a
            ``_Fractions.xml`` without its micrograph XML) is kept but never sent.
    """

    kind: EntityKind
    uuid: str
    acq_key: str
    natural_id: str
    parent_uuid: str | None
    source: str
    rank: int
    order_key: str
    fields: dict[str, Any]
    primary: bool = True


Render = Callable[[EntityKind, dict[str, Any]], tuple[dict[str, Any], bool]]
"""Merged fields of one entity -> (wire payload, skip). ``skip`` keeps the entity off the backend."""

BuildParent = Callable[[EntityKind, str, dict[str, Any]], "Contribution | None"]
"""(child kind, acquisition key, child's merged fields) -> the synthesized contribution of the child's parent,
or ``None`` when the child's fields do not say enough to place it."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """The processed version of one file: recorded so that an unchanged file is never processed twice."""

    path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str
    status: str  # "done" or "failed"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One sendable outbox row with the entity's current payload."""

    uuid: str
    kind: EntityKind
    version: int
    payload: dict[str, Any]
    payload_hash: str
    created: bool
    parent_uuid: str | None
    attempts: int


@dataclass(slots=True)
class ApplyResult:
    """What one :meth:`~agent.ingest.store.IngestStore.apply_contributions` call changed."""

    enqueued: int = 0
    unchanged: int = 0
    touched: set[str] = field(default_factory=set)
    completed: list[Contribution] = field(default_factory=list)
    """Real contributions that arrived for synthesized entities (the entity's own file appeared)."""


@dataclass(slots=True)
class Outcome:
    """What processing one path produced (computed in a worker thread or process, committed by the committer).

    Attributes:
        path: the file.
        info: its classification (``None`` when it is not an EPU file).
        record: the processed version to record (``None``: nothing to record).
        contributions: what the file says about its entities.
        atlas: the parsed ``Atlas.dm`` (joined to the sessions that name it at commit).
        atlas_claim: ``(acquisition key, normalised atlas path)`` of a session that names its atlas.
        incomplete: the file is still being written: look again later.
        skipped: unchanged since its last processing (or gone).
        error: why the file could not be processed.
    """

    path: str
    info: EpuPath | None = None
    record: FileRecord | None = None
    contributions: list[Contribution] = field(default_factory=list)
    atlas: ParsedAtlas | None = None
    atlas_claim: tuple[str, str] | None = None
    incomplete: bool = False
    skipped: bool = False
    error: str | None = None


@dataclass(slots=True)
class CommitResult:
    """What one :meth:`~agent.ingest.store.IngestStore.commit` wrote."""

    enqueued: int = 0
    completed: list[Contribution] = field(default_factory=list)
    """Synthesized parents that their own file completed in this commit."""
    fetch: list[str] = field(default_factory=list)
    """Atlas files a session named that nobody has read yet (outside the watched folder): submit them."""


__all__ = [
    "NOT_SYNTHESIZED",
    "SYNTHESIZED_COMPLETED",
    "SYNTHESIZED_RANK",
    "SYNTHESIZED_SOURCE",
    "SYNTHESIZED_WAITING",
    "ApplyResult",
    "BuildParent",
    "CommitResult",
    "Contribution",
    "FileRecord",
    "OutboxItem",
    "Outcome",
    "Render",
]
