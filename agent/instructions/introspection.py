"""What ``agent.status.request`` and ``agent.info.*`` read from the ingest side.

The ingest service implements :class:`IngestIntrospection`; the instruction service only depends on this
protocol, so either side can be built and tested alone. Every method returns a JSON-serialisable dict and must
be cheap and thread-safe (handlers call them from the event loop while ingest runs).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class IngestIntrospection(Protocol):
    """Read-only facts about the ingest pipeline."""

    def snapshot(self) -> dict[str, Any]:
        """Queue depth, outbox depth, entities posted, orphans, last error: the status-line fields."""
        ...

    def datastore_info(self) -> dict[str, Any]:
        """Known entities by kind (acquisitions, grids, grid squares, foil holes, micrographs, ...)."""
        ...

    def metrics_info(self) -> dict[str, Any]:
        """Throughput, success/failure counts, latency percentiles, retry distribution."""
        ...

    def error_info(self) -> dict[str, Any]:
        """Errors by category with recent examples."""
        ...

    def orphan_info(self) -> dict[str, Any]:
        """Orphans waiting for a parent by kind, resolved and timed-out counts."""
        ...
