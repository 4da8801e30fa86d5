"""EPU ingest: watcher, settling, deterministic identity, durable state, orphans, outbox, flusher.

``IngestService(config, db, client)`` composes them (``start()`` / ``stop()``); ``em-agent ingest DIR --once``
runs it as a backlog import.

The names below are imported on first use (PEP 562): a parser process imports :mod:`agent.ingest.parsing`,
and with it this package, and must not pay for the HTTP client, the watcher and the flusher it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.ingest.config import IngestConfig
    from agent.ingest.entities import ContributionBuilder
    from agent.ingest.flusher import FlushMetrics, IngestClient, OutboxFlusher
    from agent.ingest.identity import EM_AGENT_NAMESPACE, EntityKind, acquisition_key, entity_uuid
    from agent.ingest.kinds import KINDS, KindSpec
    from agent.ingest.records import CommitResult, Contribution, FileRecord, OutboxItem, Outcome
    from agent.ingest.service import IngestMetrics, IngestService
    from agent.ingest.settle import Settler
    from agent.ingest.store import IngestStore
    from agent.ingest.watcher import FileWatcher, is_network_path, scan_tree

_WHERE = {
    "IngestConfig": "config",
    "ContributionBuilder": "entities",
    "FlushMetrics": "flusher",
    "IngestClient": "flusher",
    "OutboxFlusher": "flusher",
    "EM_AGENT_NAMESPACE": "identity",
    "EntityKind": "identity",
    "acquisition_key": "identity",
    "entity_uuid": "identity",
    "KINDS": "kinds",
    "KindSpec": "kinds",
    "IngestMetrics": "service",
    "IngestService": "service",
    "Settler": "settle",
    "CommitResult": "records",
    "Contribution": "records",
    "FileRecord": "records",
    "Outcome": "records",
    "OutboxItem": "records",
    "IngestStore": "store",
    "FileWatcher": "watcher",
    "is_network_path": "watcher",
    "scan_tree": "watcher",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "EM_AGENT_NAMESPACE",
    "KINDS",
    "CommitResult",
    "Contribution",
    "ContributionBuilder",
    "EntityKind",
    "FileRecord",
    "FileWatcher",
    "FlushMetrics",
    "IngestClient",
    "IngestConfig",
    "IngestMetrics",
    "IngestService",
    "IngestStore",
    "KindSpec",
    "OutboxFlusher",
    "OutboxItem",
    "Outcome",
    "Settler",
    "acquisition_key",
    "entity_uuid",
    "is_network_path",
    "scan_tree",
]
