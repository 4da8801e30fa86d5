"""``agent.*`` handlers: status, runtime configuration and introspection (query lane, never touch the
device)."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.instructions.config import RuntimeConfig
from agent.instructions.context import Call
from agent.instructions.errors import InstructionDeclined, InstructionFailed
from agent.instructions.models import JsonDict, Lane
from agent.instructions.registry import HandlerRegistry


class EmptyPayload(BaseModel):
    """No fields. ``{}`` or a missing payload are accepted; any key is refused."""

    model_config = ConfigDict(extra="forbid")


class ConfigUpdatePayload(BaseModel):
    """Runtime settings to change; at least one. ``log_interval`` is SmartEM's name for
    ``status_interval_s``."""

    model_config = ConfigDict(extra="forbid")

    status_interval_s: float | None = Field(
        None, description="Period of the agent.status log line, s (1..86400)."
    )
    log_interval: float | None = Field(
        None, description="Alias of status_interval_s (the reference agent's key)."
    )
    log_level: str | None = Field(None, description="DEBUG, INFO, WARNING or ERROR (case-insensitive).")
    heartbeat_interval_s: float | None = Field(None, description="Agent heartbeat period, s (0 disables).")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown keys {unknown}; allowed keys: {', '.join(_allowed_keys())}")
        return data

    @model_validator(mode="after")
    def _one_key(self) -> ConfigUpdatePayload:
        if not self.model_fields_set:
            raise ValueError(f"no setting given; allowed keys: {', '.join(_allowed_keys())}")
        if self.log_interval is not None and self.status_interval_s is not None:
            raise ValueError("give status_interval_s or its alias log_interval, not both")
        return self

    def changes(self) -> dict[str, Any]:
        """The requested changes in :class:`~agent.instructions.config.RuntimeSettings` keys."""
        out: dict[str, Any] = {}
        if self.status_interval_s is not None or self.log_interval is not None:
            out["status_interval_s"] = (
                self.status_interval_s if self.status_interval_s is not None else self.log_interval
            )
        if self.log_level is not None:
            out["log_level"] = self.log_level.upper()
        if self.heartbeat_interval_s is not None:
            out["heartbeat_interval_s"] = self.heartbeat_interval_s
        return out


def _allowed_keys() -> list[str]:
    return sorted(ConfigUpdatePayload.model_fields)


def _own_facts(call: Call) -> JsonDict:
    ctx = call.context
    return {
        "agent_id": ctx.agent_id,
        "session_id": ctx.session_id,
        "uptime_s": round(time.time() - ctx.started_at, 1),
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "device": {"configured": ctx.device is not None, "open": bool(ctx.device and ctx.device.is_open)},
        "decision_service": ctx.decisions is not None,
        "runtime_config": ctx.runtime.settings.model_dump(),
        "instructions": ctx.executor_facts(),
    }


def register(registry: HandlerRegistry) -> None:
    """Add the ``agent.*`` handlers to ``registry``."""

    @registry.add(
        "agent.status.request", EmptyPayload, Lane.QUERY, "Status of the agent: ingest, instructions, device."
    )
    async def status_request(_: EmptyPayload, call: Call) -> JsonDict:
        result = {"status": "running", **_own_facts(call)}
        introspection = call.context.introspection
        result["ingest"] = introspection.snapshot() if introspection is not None else None
        return result

    @registry.add(
        "agent.config.update",
        ConfigUpdatePayload,
        Lane.QUERY,
        "Change runtime settings: status_interval_s (alias log_interval), log_level, heartbeat_interval_s.",
    )
    async def config_update(payload: ConfigUpdatePayload, call: Call) -> JsonDict:
        runtime: RuntimeConfig = call.context.runtime
        try:
            update = await runtime.update(payload.changes())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise InstructionDeclined(f"invalid setting: {problems}", allowed_keys=_allowed_keys()) from exc
        result: JsonDict = {
            "changed": update.changed,
            "not_applied": update.not_applied,
            "settings": runtime.settings.model_dump(),
        }
        if update.not_applied:
            # A key that did not take effect is never acknowledged as done: declined when nothing changed,
            # failed when the agent now runs with part of what was asked.
            why = "; ".join(f"{key}: {reason}" for key, reason in update.not_applied.items())
            if update.changed:
                raise InstructionFailed(f"not applied: {why}", **result)
            raise InstructionDeclined(f"not applied: {why}", **result)
        return result

    def _info(name: str, method: str, summary: str) -> None:
        @registry.add(f"agent.info.{name}", EmptyPayload, Lane.QUERY, summary)
        async def info(_: EmptyPayload, call: Call) -> JsonDict:
            introspection = call.context.introspection
            result: JsonDict
            if introspection is not None:
                result = {"source": "ingest", name: getattr(introspection, method)()}
            else:
                # No ingest service in this process: answer with what the executor itself knows.
                result = {
                    "source": "executor",
                    name: None,
                    "ingest_running": False,
                    "executor": _own_facts(call),
                }
            journal = call.context.journal
            if name == "errors" and journal is not None:
                result["recent_instruction_failures"] = journal.recent_failures()
            return result

    _info("datastore", "datastore_info", "Entities known to the ingest pipeline, by kind.")
    _info("metrics", "metrics_info", "Ingest throughput, success/failure counts, latency percentiles.")
    _info("errors", "error_info", "Ingest errors by category, plus recent failed instructions.")
    _info("orphans", "orphan_info", "Ingest orphans waiting for their parent, by kind.")
