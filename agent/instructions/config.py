"""Configuration of the instruction executor and the runtime settings that instructions may change.

``ExecutorConfig`` is the ``[instructions]`` section of the agent's settings: fixed for the life of the
process. ``RuntimeConfig`` holds the few values an operator may change while the agent runs
(``agent.config.update``); the daemon observes it through :meth:`RuntimeConfig.subscribe`.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ExecutorConfig(BaseModel):
    """``[instructions]``: how instructions are journaled, executed and acknowledged.

    Defaults suit a production agent; tests shorten the delays.
    """

    model_config = ConfigDict(extra="forbid")

    default_timeout_s: float = Field(
        60.0, gt=0, description="Time limit of one handler unless `timeouts_s` names its type."
    )
    timeouts_s: dict[str, float] = Field(
        default_factory=lambda: {
            "agent.status.request": 10.0,
            "agent.config.update": 10.0,
            "agent.info.datastore": 10.0,
            "agent.info.metrics": 10.0,
            "agent.info.errors": 10.0,
            "agent.info.orphans": 10.0,
            "microscope.control.take_image": 120.0,
            "sem.acquire": 120.0,
            "sem.autofocus": 600.0,
            "sem.save_roi": 600.0,
            "sem.find_roi": 600.0,
            "sem.pump": 900.0,
            "sem.vent": 900.0,
            "sem.await_human": 86400.0,
        },
        description="Per-type time limits in seconds (instruction type -> seconds).",
    )
    query_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="How many `agent.*` queries may run at once (device actions run one at a time).",
    )
    drain_timeout_s: float = Field(
        10.0,
        ge=0,
        description="On stop, how long in-flight instructions may finish before they are cancelled.",
    )
    ack_initial_delay_s: float = Field(0.5, gt=0, description="First delay before re-sending a failed ack.")
    ack_max_delay_s: float = Field(30.0, gt=0, description="Cap of the exponential ack retry delay.")
    ack_max_attempts: int = Field(
        12,
        ge=1,
        description=(
            "Attempts made while connected before an ack is given up (SmartEM answers 500 to a repeated ack, "
            "which cannot be told from other failures); a redelivery of the instruction re-arms it."
        ),
    )
    resync_interval_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Least time between stream reconnects forced by refused acks (SmartEM re-sends an instruction reset "
            "by its expiry sweep only on a new notification or a reconnect)."
        ),
    )
    expiry_grace_s: float = Field(
        0.0,
        ge=0,
        description="Tolerated clock skew: an instruction counts as expired this long after expires_at.",
    )
    journal_retention_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long finished, acknowledged instructions are kept to recognise redeliveries.",
    )
    max_result_bytes: int = Field(
        256 * 1024, ge=1024, description="Larger results are replaced by a summary (the ack must stay small)."
    )

    enabled_types: list[str] = Field(
        default_factory=lambda: ["agent.*", "microscope.control.*", "sem.*"],
        description=(
            "Allow-list of instruction types this agent executes (shell-style patterns, e.g. 'agent.*'); "
            "any other type is declined without running. Device types are also declined while no device "
            "is configured."
        ),
    )

    def timeout_for(self, instruction_type: str) -> float:
        """The time limit for ``instruction_type``."""
        return self.timeouts_s.get(instruction_type, self.default_timeout_s)

    def is_enabled(self, instruction_type: str) -> bool:
        """Whether ``instruction_type`` matches the allow-list."""
        return any(fnmatch.fnmatchcase(instruction_type, pattern) for pattern in self.enabled_types)


class RuntimeSettings(BaseModel):
    """The settings ``agent.config.update`` may change, with their documented ranges."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    status_interval_s: float = Field(
        60.0, ge=1.0, le=86400.0, description="Period of the `agent.status` log line."
    )
    log_level: LogLevel = Field("INFO", description="Level of the agent's loggers.")
    heartbeat_interval_s: float = Field(
        60.0, ge=0.0, le=3600.0, description="Period of the agent heartbeat POST (0 disables it)."
    )


Listener = Callable[["RuntimeSettings", dict[str, Any]], None]


class RuntimeConfig:
    """Thread-safe holder of :class:`RuntimeSettings` that notifies subscribers of every change.

    ``agent.config.update`` calls :meth:`update`; the daemon subscribes to apply a new log level or status
    interval. A listener receives the new settings and the dict of changed keys (old values are not needed by
    anyone).
    """

    def __init__(self, initial: RuntimeSettings | None = None) -> None:
        self._settings = initial if initial is not None else RuntimeSettings()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    @staticmethod
    def allowed_keys() -> list[str]:
        """The keys ``agent.config.update`` accepts."""
        return sorted(RuntimeSettings.model_fields)

    @property
    def settings(self) -> RuntimeSettings:
        """A copy of the current settings."""
        with self._lock:
            return self._settings.model_copy()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after each change; returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate and apply ``changes`` atomically; returns the changed keys with their new values.

        Raises ``pydantic.ValidationError`` (nothing applied) when a key is unknown or a value out of range.
        """
        with self._lock:
            merged = self._settings.model_dump() | changes
            new = RuntimeSettings.model_validate(merged)
            changed = {
                key: getattr(new, key) for key in changes if getattr(self._settings, key) != getattr(new, key)
            }
            self._settings = new
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(new, changed)
            except Exception:
                # A faulty listener must not make the update look failed: the value is already applied.
                log.exception("runtime config listener failed")
        return changed
