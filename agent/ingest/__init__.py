"""EPU ingest: watcher, settling, deterministic identity, durable state, orphans, outbox, flusher.

``IngestService(config, db, client)`` composes them (``start()`` / ``stop()``); ``em-agent ingest DIR --once``
runs it as a backlog import.
"""

from agent.ingest.config import IngestConfig
from agent.ingest.entities import ContributionBuilder
from agent.ingest.flusher import FlushMetrics, IngestClient, OutboxFlusher
from agent.ingest.identity import EM_AGENT_NAMESPACE, EntityKind, acquisition_key, entity_uuid
from agent.ingest.service import IngestMetrics, IngestService
from agent.ingest.settle import Settler
from agent.ingest.store import Contribution, FileRecord, IngestStore, OutboxItem
from agent.ingest.watcher import FileWatcher, is_network_path, scan_tree

__all__ = [
    "EM_AGENT_NAMESPACE",
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
    "OutboxFlusher",
    "OutboxItem",
    "Settler",
    "acquisition_key",
    "entity_uuid",
    "is_network_path",
    "scan_tree",
]
