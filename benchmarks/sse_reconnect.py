"""Benchmark: SSEAgentClient reconnect time after a backend restart (median of 10).

Starts the testbed backend (strict mode) on loopback, connects an SSEAgentClient, then 10 times: stops the server,
keeps it down for ``--down`` seconds, starts it again on the same port and database, and measures the time from
"server accepting again" until the client's stream is connected again, and until an instruction created right
after the restart has been received. Runs once with the client's default backoff (1 s initial, 60 s cap) and once
with a tight one (0.1 s initial, 1 s cap). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend_client import SSEAgentClient
from testbed.backend import BackendServer


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def measure(rounds: int, down: float, initial: float, maximum: float) -> dict[str, float]:
    """Median / max reconnect and delivery times (seconds) over ``rounds`` restarts."""
    with tempfile.TemporaryDirectory() as tmp:
        server = BackendServer(Path(tmp) / "bench.db", ping_interval=5.0).start()
        session = server.create_session("bench-agent")
        received: list[str] = []
        client = SSEAgentClient(
            server.url,
            "bench-agent",
            session,
            max_retries=None,
            initial_retry_delay=initial,
            max_retry_delay=maximum,
        )
        thread = threading.Thread(
            target=client.stream_instructions, args=(lambda d: received.append(d["instruction_id"]),)
        )
        thread.start()
        reconnect: list[float] = []
        deliver: list[float] = []
        try:
            if not _wait(lambda: client.connected, 10):
                raise SystemExit("client never connected")
            for n in range(rounds):
                before = client.stats["connections"]
                server.stop()
                time.sleep(down)
                server.start()
                restarted = time.monotonic()
                instruction = server.create_instruction(session, "agent.status.request")
                if not _wait(lambda b=before: client.stats["connections"] > b and client.connected, 120):
                    raise SystemExit("client did not reconnect")
                reconnect.append(time.monotonic() - restarted)
                if not _wait(lambda i=instruction: i in received, 120):
                    raise SystemExit("instruction not delivered")
                deliver.append(time.monotonic() - restarted)
                print(f"round {n + 1}: reconnect {reconnect[-1]:.3f} s", file=sys.stderr)
        finally:
            client.stop()
            thread.join(10)
            client.close()
            server.stop()
    return {
        "reconnect_median_s": round(statistics.median(reconnect), 3),
        "reconnect_max_s": round(max(reconnect), 3),
        "delivery_median_s": round(statistics.median(deliver), 3),
    }


def main() -> None:
    """Print ``{"benchmark": "sse_reconnect", ...}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--down", type=float, default=0.5, help="seconds the server stays down")
    args = parser.parse_args()
    default = measure(args.rounds, args.down, 1.0, 60.0)
    tight = measure(args.rounds, args.down, 0.1, 1.0)
    print(
        json.dumps(
            {
                "benchmark": "sse_reconnect",
                "rounds": args.rounds,
                "server_down_s": args.down,
                "default_backoff": default,
                "tight_backoff_0.1_1s": tight,
            }
        )
    )


if __name__ == "__main__":
    main()
