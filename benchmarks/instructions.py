"""Instruction round trip: created in the backend -> acknowledgement stored, for agent.status.request and a
stage move.

Setup (all on 127.0.0.1): the testbed backend (strict mode, SQLite file), the instruction service in this
process (SSE stream, journal, executor, acks), and for the stage move the Semphony control server over the SEM
simulator with ``time_factor=0`` (no simulated travel time: the number is the software overhead of the whole
path).

The round trip is measured with the backend's own timestamps (``created_at`` -> ``acknowledged_at`` of the
instruction row), one instruction at a time. Prints one JSON line; progress goes to stderr.
Target: p99 < 50 ms for agent.status.request.

    .venv/bin/python benchmarks/instructions.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agent.app import DeviceOptions, build_device_handle, build_service
from agent.devices.simulator.config import SimulatorConfig
from agent.instructions.config import ExecutorConfig
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from backend_client.sse import SSEAgentClient
from testbed.backend import BackendServer
from testbed.semphony_server import SemphonyServer

AGENT_ID = "bench-agent"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def round_trips(
    http: httpx.AsyncClient, session_id: str, instruction_type: str, payloads: list[dict[str, Any]]
) -> list[float]:
    out: list[float] = []
    for i, payload in enumerate(payloads):
        body = {"instruction_type": instruction_type, "payload": payload, "expires_in_minutes": 10}
        response = await http.post(f"/debug/session/{session_id}/create-instruction", json=body)
        response.raise_for_status()
        iid = response.json()["instruction_id"]
        deadline = time.monotonic() + 10
        while True:
            row = (await http.get(f"/testbed/instructions/{iid}")).json()
            if row.get("acknowledged_at"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{instruction_type} {iid} not acknowledged: {row}")
            await asyncio.sleep(0.002)
        created = datetime.fromisoformat(row["created_at"])
        acked = datetime.fromisoformat(row["acknowledged_at"])
        out.append((acked - created).total_seconds() * 1000)
        if (i + 1) % 50 == 0:
            print(f"{instruction_type}: {i + 1}/{len(payloads)}", file=sys.stderr)
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


async def main_async(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            BackendServer(root / "backend.sqlite3", heartbeat_interval=5.0, ping_interval=2.0) as backend,
            SemphonyServer(config=SimulatorConfig(time_factor=0.0)) as semphony,
        ):
            session_id = backend.create_session(AGENT_ID)
            db = open_database(root / "state")
            sse = SSEAgentClient(
                backend.url, AGENT_ID, session_id, max_retries=None, initial_retry_delay=0.05
            )
            api = AsyncSmartEMAPIClient(backend.url, retry=RetryPolicy.disabled())
            device = build_device_handle(
                DeviceOptions(backend="semphony", url=semphony.url, api_key=semphony.api_key)
            )
            service = build_service(
                ExecutorConfig(),
                db,
                sse_client=sse,
                api_client=api,
                agent_id=AGENT_ID,
                session_id=session_id,
                state_dir=root / "state",
                device=device,
            )
            await service.start()
            async with httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
                # Warm up: open the stream, attach the device, fill connection pools.
                await round_trips(http, session_id, "agent.status.request", [{}] * 5)
                await round_trips(http, session_id, "sem.stage.move_to", [{"x": 0.0, "y": 0.0}])
                status = await round_trips(http, session_id, "agent.status.request", [{}] * n)
                moves = await round_trips(
                    http,
                    session_id,
                    "sem.stage.move_to",
                    [{"x": round((i % 20) * 0.1, 3), "y": round((i % 7) * 0.1, 3)} for i in range(n)],
                )
            sse.stop()
            await service.stop()
            await api.aclose()
            db.close()
    status_summary = summary(status)
    return {
        "benchmark": "instructions_round_trip",
        "n": n,
        "agent_status_request": status_summary,
        "stage_move_simulator": summary(moves),
        "target_status_p99_ms": 50,
        "status_p99_met": status_summary["p99_ms"] < 50,
        "note": "backend created_at -> acknowledged_at, loopback, strict testbed, simulator time_factor=0",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args.n))))


if __name__ == "__main__":
    main()
