"""Configuration of the instruction executor and the runtime settings that instructions may change.

``ExecutorConfig`` is the ``[instructions]`` section of the agent's settings: fixed for the life of the
process. ``RuntimeConfig`` holds the few values an operator may change while the agent runs
(``agent.config.update``). A value counts as changed only once the part of the process that uses it has put it
into effect: whoever composes the process binds an applier per key (:meth:`RuntimeConfig.bind`), and a key
nothing applies, or whose applier refuses, is reported as not applied with the reason.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


#: Puts a new value of one runtime setting into effect; raises :class:`NotApplied` when it cannot.
Applier = Callable[[Any], Awaitable[None]]


class NotApplied(Exception):
    """Raised by an :data:`Applier` that could not put a value into effect; ``reason`` goes into the ack."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RuntimeUpdate:
    """What :meth:`RuntimeConfig.update` did: ``changed`` holds only keys now in effect (new values);
    ``not_applied`` the requested changes that did not take effect, each with the reason."""

    changed: dict[str, Any]
    not_applied: dict[str, str]


class RuntimeConfig:
    """Holder of the :class:`RuntimeSettings` in effect, and of the appliers that change them.

    ``agent.config.update`` calls :meth:`update`. The settings only ever show values an applier has put into
    effect, so they describe what the agent does, not what was asked.
    """

    def __init__(self, initial: RuntimeSettings | None = None) -> None:
        self._settings = initial if initial is not None else RuntimeSettings()
        # Readers (status requests, other threads) take the short lock; updates are serialised separately
        # because appliers await (stopping a heartbeat) and two concurrent updates must not interleave.
        self._lock = threading.Lock()
        self._update_lock = asyncio.Lock()
        self._appliers: dict[str, Applier] = {}

    @staticmethod
    def allowed_keys() -> list[str]:
        """The keys ``agent.config.update`` accepts."""
        return sorted(RuntimeSettings.model_fields)

    @property
    def settings(self) -> RuntimeSettings:
        """A copy of the settings in effect."""
        with self._lock:
            return self._settings.model_copy()

    def bind(self, key: str, applier: Applier) -> Callable[[], None]:
        """Make ``applier`` the way a new value of ``key`` takes effect; returns a function that unbinds it.

        One applier per key: a second would leave it unclear which one's outcome is reported.
        """
        if key not in RuntimeSettings.model_fields:
            raise ValueError(f"unknown runtime setting {key!r}; known: {', '.join(self.allowed_keys())}")
        with self._lock:
            if key in self._appliers:
                raise ValueError(f"runtime setting {key!r} already has an applier")
            self._appliers[key] = applier

        def unbind() -> None:
            with self._lock:
                if self._appliers.get(key) is applier:
                    del self._appliers[key]

        return unbind

    async def update(self, changes: dict[str, Any]) -> RuntimeUpdate:
        """Validate ``changes`` as a whole, then apply each key that differs from the value in effect.

        Raises ``pydantic.ValidationError`` (nothing applied) when a key is unknown or a value out of range.
        A key without an applier, or whose applier raises, keeps its old value and is in ``not_applied``.
        """
        async with self._update_lock:
            current = self.settings
            requested = RuntimeSettings.model_validate(current.model_dump() | changes)
            changed: dict[str, Any] = {}
            not_applied: dict[str, str] = {}
            for key in changes:
                value = getattr(requested, key)
                if getattr(current, key) == value:
                    continue  # already in effect: nothing to do, nothing to report
                with self._lock:
                    applier = self._appliers.get(key)
                if applier is None:
                    not_applied[key] = f"nothing in this agent process applies {key}"
                    continue
                try:
                    await applier(value)
                except NotApplied as exc:
                    not_applied[key] = exc.reason
                    continue
                except Exception as exc:
                    log.exception("runtime setting %s could not be applied", key)
                    not_applied[key] = f"{type(exc).__name__}: {exc}"
                    continue
                with self._lock:
                    self._settings = self._settings.model_copy(update={key: value})
                changed[key] = value
        if changed or not_applied:
            log.info("agent.runtime_config_changed", extra={"changes": changed, "not_applied": not_applied})
        return RuntimeUpdate(changed, not_applied)


async def apply_root_log_level(level: Any) -> None:
    """An :data:`Applier` for ``log_level``: the level of the root logger, which every agent logger inherits."""
    logging.getLogger().setLevel(str(level).upper())
