"""Deterministic entity identity: natural key -> UUID.

Every entity the agent posts carries a UUID that the agent mints. Deriving it with ``uuid5`` from the acquisition
key, the entity kind and EPU's natural id (docs/architecture.md, "Identity") means that a restarted agent, or one
whose state file was lost, re-derives the same UUIDs and can never create a second copy of an entity: the backend
sees the same primary key again and answers with a conflict (or SmartEM's 500), which the outbox turns into an
update.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path, PurePath

#: Namespace of every em-agent entity UUID. Never change it: doing so re-keys every entity ever posted.
EM_AGENT_NAMESPACE = uuid.UUID("6f1c9a52-3d4e-5b7a-9c11-0e2f4a6b8d10")


class EntityKind(StrEnum):
    """Kinds of backend entities, named as in the identity formula (what the pipeline knows about each:
    :data:`agent.ingest.kinds.KINDS`)."""

    ACQUISITION = "acquisition"
    GRID = "grid"
    ATLAS = "atlas"
    ATLAS_TILE = "atlas_tile"
    GRIDSQUARE = "gridsquare"
    FOILHOLE = "foilhole"
    MICROGRAPH = "micrograph"


def acquisition_key(session_root: PurePath, watch_root: PurePath) -> str:
    """The acquisition key of an EPU session folder: its path relative to the watch root, POSIX separators.

    A session folder that *is* the watch root has the key ``"."``. A folder outside the watch root (possible only
    through a misconfiguration) keeps its absolute POSIX path so that it still gets a stable, unique key.
    """
    try:
        rel = PurePath(session_root).relative_to(watch_root)
    except ValueError:
        return Path(session_root).as_posix()
    text = rel.as_posix()
    return text if text else "."


def entity_uuid(acq_key: str, kind: EntityKind | str, natural_id: str) -> str:
    """The deterministic UUID (canonical text form) of one entity.

    ``uuid5(EM_AGENT_NAMESPACE, f"{acquisition_key}/{kind}/{natural_id}")``; for the acquisition and its grid the
    natural id is the acquisition key itself (one of each per ``EpuSession.dm`` folder).
    """
    return str(uuid.uuid5(EM_AGENT_NAMESPACE, f"{acq_key}/{EntityKind(kind).value}/{natural_id}"))


__all__ = ["EM_AGENT_NAMESPACE", "EntityKind", "acquisition_key", "entity_uuid"]
