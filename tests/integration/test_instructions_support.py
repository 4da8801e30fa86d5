"""Shared helpers of the instruction integration tests (no tests here): a testbed world, polling for acks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.app import DeviceOptions, build_device_handle, build_service
from agent.devices.simulator.config import SimulatorConfig
from agent.instructions.config import ExecutorConfig
from agent.instructions.service import InstructionService
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from backend_client.sse import SSEAgentClient
from testbed.backend import BackendServer
from testbed.semphony_server import SemphonyServer

AGENT_ID = "agent-test"

FAST_BACKEND: dict[str, Any] = {"heartbeat_interval": 1.0, "ping_interval": 0.5, "retry_ms": 50}
FAST_SIM = SimulatorConfig(time_factor=0.0)


def ack_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The accepted acknowledgement of a backend instruction row (None if not acknowledged)."""
    accepted = [a for a in row.get("acknowledgements", []) if a.get("outcome") == "accepted"]
    return accepted[-1] if accepted else None


def file_size_under(path: str, root: Path) -> int:
    """The size of ``path``, asserting it is a file inside ``root``."""
    resolved = Path(path).resolve()
    assert resolved.is_file(), path
    assert resolved.is_relative_to(root.resolve()), path
    return resolved.stat().st_size


def result_of(row: dict[str, Any]) -> Any:
    ack = ack_of(row)
    assert ack is not None, row
    return json.loads(ack["result"]) if ack.get("result") else None


@dataclass
class World:
    backend: BackendServer
    semphony: SemphonyServer | None
    session_id: str
    state_dir: Path
    #: How the agent reaches its microscope; None: the world's Semphony server over HTTP.
    device: DeviceOptions | None = None

    async def wait_acked(self, instruction_id: str, within_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            rows = await asyncio.to_thread(self.backend.instructions, self.session_id)
            row = next(r for r in rows if r["instruction_id"] == instruction_id)
            if ack_of(row) is not None:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"instruction {instruction_id} not acknowledged: {row}")
            await asyncio.sleep(0.02)

    async def run(self, instruction_type: str, payload: Any = None, **kw: Any) -> dict[str, Any]:
        iid = await asyncio.to_thread(
            self.backend.create_instruction, self.session_id, instruction_type, payload, **kw
        )
        return await self.wait_acked(iid)


@asynccontextmanager
async def running_service(
    world: World,
    *,
    config: ExecutorConfig | None = None,
    device: bool = True,
    decisions: Any | None = None,
) -> AsyncIterator[InstructionService]:
    """An InstructionService in this process, wired to the world's backend and Semphony server over HTTP."""
    db = open_database(world.state_dir)
    options = world.device
    if options is None:
        assert world.semphony is not None
        options = DeviceOptions(backend="semphony", url=world.semphony.url, api_key=world.semphony.api_key)
    handle = build_device_handle(options) if device else None
    sse = SSEAgentClient(
        world.backend.url,
        AGENT_ID,
        world.session_id,
        max_retries=None,
        initial_retry_delay=0.05,
        max_retry_delay=0.2,
    )
    api = AsyncSmartEMAPIClient(world.backend.url, retry=RetryPolicy.disabled())
    service = build_service(
        config or ExecutorConfig(ack_initial_delay_s=0.05, ack_max_delay_s=0.5),
        db,
        sse_client=sse,
        api_client=api,
        agent_id=AGENT_ID,
        session_id=world.session_id,
        state_dir=world.state_dir,
        device=handle,
        decisions=decisions,
    )
    await service.start()
    try:
        yield service
    finally:
        sse.stop()
        await service.stop()
        await api.aclose()
        db.close()
