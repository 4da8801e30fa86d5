"""Real-backend benchmark: a generated backlog imported into the real SmartEM backend, em-agent beside a bare client
and beside SmartEM's own reference agent.

Starts the real backend itself (:class:`testbed.smartem_real.RealSmartEM` from the Python 3.12 tool venv built by
:func:`testbed.toolenv.ensure_tool_venv`: PostgreSQL, RabbitMQ, its API and consumer, the OIDC stand-in), generates
a session (``--preset``, default ``medium``: 4788 entities) and measures, each phase on emptied tables with the
backend's consumer idle:

* ``em_agent``: ``em-agent ingest DIR --once`` (a subprocess, OAuth client credentials as configured in production)
  from its start to its exit; every row checked in the backend's tables afterwards.
* ``bare_client``: the requests em-agent sends (recorded from an in-process em-agent against the testbed in
  ``smartem`` mode; only the ones that created something, so no fallback or retry), posted by a plain
  ``httpx.AsyncClient`` with a static token and the same concurrency (``flush_concurrency``), parents' wave
  before children's: the floor of what any client can do through this API. ``ratio`` = em-agent's entities/s over
  the bare client's; ``meets_target`` = ratio >= 0.7.
* ``reference_agent``: the package's own agent (``smartem-agent watch``, same wheel) on a copy of the session,
  from its start to the end of its initial scan ("..done!" in its log): its entities/s and how many entities it
  got in (it sends datetimes with their UTC offset, which the backend refuses).
* ``four_agents``: four em-agents at once, each on a session of its own (four microscopes), total entities/s.

Prints ONE JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.ingest import IngestConfig, IngestService
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from testbed.backend import BackendServer
from testbed.epu import generate
from testbed.smartem_real import RealSmartEM
from testbed.toolenv import SMARTEM_REQUIREMENTS, ensure_tool_venv

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.7

# Dependency wave of each create, by path: a request is sent only after every request of the waves before it
# has been answered, so a child never reaches the backend before its parent (em-agent's flusher goes by rounds
# of the same kind). Updates go last.
_WAVES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^/acquisitions$"), 0),
    (re.compile(r"^/acquisitions/[^/]+/grids$"), 1),
    (re.compile(r"^/grids/[^/]+/(atlas|gridsquares|gridsquares/batch)$"), 2),
    (re.compile(r"^/(atlas-tiles/[^/]+/gridsquares|gridsquares/[^/]+/foilholes)$"), 3),
    (re.compile(r"^/foilholes/[^/]+/micrographs$"), 4),
)
_LAST_WAVE = 5


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the result line)."""
    print(f"[smartem-bench] {msg}", file=sys.stderr, flush=True)


def rate(entities: int, seconds: float) -> float:
    """Entities per second, rounded for the report."""
    return round(entities / seconds, 1) if seconds > 0 else 0.0


# -- the backend -------------------------------------------------------------------------------------------------


def settle(smartem: RealSmartEM, timeout_s: float = 900.0) -> float:
    """Wait until the backend's consumer has drained its queue (it works through one event per created entity
    and would otherwise compete for the CPU with the next phase); returns the seconds waited."""
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < timeout_s:
        ready = sum(n for n, _consumers in smartem.queues().values())
        quiet = quiet + 1 if ready == 0 else 0
        if quiet >= 3:
            break
        time.sleep(1.0)
    return round(time.monotonic() - start, 1)


def fresh(smartem: RealSmartEM) -> None:
    """Empty the backend for the next phase, with its consumer idle."""
    waited = settle(smartem)
    smartem.reset_data()
    log(f"backend emptied (consumer drained in {waited:.0f} s)")


def agent_env(smartem: RealSmartEM) -> dict[str, str]:
    """The environment of an em-agent pointed at the real backend with OAuth client credentials (nothing else of
    the caller's EM_AGENT_* settings leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
    env.update(
        {
            "EM_AGENT_BACKEND__URL": smartem.base_url,
            "EM_AGENT_BACKEND__OAUTH_TOKEN_URL": smartem.oidc.token_url,
            "EM_AGENT_BACKEND__CLIENT_ID": smartem.oidc.client_id,
            "EM_AGENT_BACKEND__CLIENT_SECRET": smartem.oidc.client_secret,
        }
    )
    return env


def ingest_command(visit: Path, state: Path) -> list[str]:
    """``em-agent ingest VISIT --once`` as a subprocess command (the backend comes from the environment)."""
    return [sys.executable, "-m", "agent.cli", "ingest", str(visit), "--once", "--json", "--no-progress",
            "--state-dir", str(state)]  # fmt: skip


# -- em-agent --------------------------------------------------------------------------------------------------


def parse_only_seconds(visit: Path) -> float:
    """How long ``em-agent ingest --dry-run`` takes on ``visit``: process start, scan and parse, no backend (the
    part of em-agent's time the bare client has no counterpart for)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
    cmd = [sys.executable, "-m", "agent.cli", "ingest", str(visit), "--dry-run", "--json", "--no-progress"]
    start = time.monotonic()
    subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, check=True)
    return round(time.monotonic() - start, 2)


def run_em_agent(smartem: RealSmartEM, visit: Path, state: Path, expected: dict[str, int]) -> dict[str, Any]:
    """One em-agent importing ``visit``, timed from process start to exit."""
    total = sum(expected.values())
    start = time.monotonic()
    proc = subprocess.run(
        ingest_command(visit, state),
        env=agent_env(smartem),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - start
    counts = smartem.entity_counts()
    complete = proc.returncode == 0 and counts == expected
    if not complete:
        log(f"em-agent rc={proc.returncode} counts={counts} stderr tail: {proc.stderr[-800:]}")
    log(f"em-agent: {total} entities in {elapsed:.1f} s")
    return {
        "seconds": round(elapsed, 2),
        "entities_per_s": rate(total, elapsed),
        "complete": complete,
    }


def run_four_agents(
    smartem: RealSmartEM, visits: list[Path], work: Path, expected: dict[str, int]
) -> dict[str, Any]:
    """Four em-agents at once, each on its own session (four microscopes on one backend); ``expected`` is the
    sessions' entities together."""
    total = sum(expected.values())
    env = agent_env(smartem)
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ingest_command(visit, work / f"state-four-{i}"),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, visit in enumerate(visits)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - start
    counts = smartem.entity_counts()
    complete = all(c == 0 for c in codes) and counts == expected
    if not complete:
        log(f"four agents: exit codes {codes}, counts {counts}")
    log(f"four agents: {total} entities in {elapsed:.1f} s")
    return {
        "agents": len(visits),
        "entities": total,
        "seconds": round(elapsed, 2),
        "entities_per_s": rate(total, elapsed),
        "complete": complete,
    }


# -- the bare client ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request em-agent sent, as it went on the wire, and the status it got."""

    method: str
    path: str
    body: bytes
    status: int


class RecordingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that records every request and the status of its answer."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.calls: list[Call] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and note it."""
        response = await self._inner.handle_async_request(request)
        self.calls.append(
            Call(request.method, request.url.raw_path.decode(), request.content, response.status_code)
        )
        return response

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._inner.aclose()


async def record_requests(visit: Path, work: Path) -> list[Call]:
    """The requests em-agent sends for ``visit``: an in-process em-agent (the configuration ``--once`` uses)
    against the testbed in ``smartem`` mode, which answers as the real backend does
    (tests/smartem/test_differential.py), so em-agent takes the same paths (the micrograph batch refused, single
    micrographs instead)."""
    with BackendServer(work / "record.sqlite3", compat="smartem") as server:
        recorder = RecordingTransport()
        client = AsyncSmartEMAPIClient(
            server.url, transport=recorder, retry=RetryPolicy(attempts=3, timeout=60.0)
        )
        db = open_database(work / "record-state")
        config = IngestConfig(
            watch_dir=visit, parse_processes=0, hold_flush_until_scanned=True, synthesize_when_scanned=True
        )
        service = IngestService(config, db, client)
        try:
            await service.start()
            posted = await service.wait_until_posted(timeout_s=900, quiet_s=5.0)
        finally:
            await service.stop()
            await client.aclose()
            db.close()
    if not posted:
        raise RuntimeError("recording em-agent's requests: the session was not posted completely")
    return recorder.calls


def _wave(call: Call) -> int:
    if call.method != "POST":
        return _LAST_WAVE
    path = call.path.split("?", 1)[0]
    return next((wave for pattern, wave in _WAVES if pattern.match(path)), _LAST_WAVE)


async def replay(calls: list[Call], base_url: str, token: str, concurrency: int) -> tuple[float, int]:
    """Send ``calls`` wave by wave, at most ``concurrency`` in flight; returns (seconds, failed requests)."""
    waves: dict[int, list[Call]] = defaultdict(list)
    for call in calls:
        waves[_wave(call)].append(call)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(concurrency)
    failed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120.0, limits=limits) as client:

        async def send(call: Call) -> None:
            nonlocal failed
            async with sem:
                try:
                    response = await client.request(call.method, call.path, content=call.body)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A keep-alive connection the server had just closed: the request never arrived.
                    response = await client.request(call.method, call.path, content=call.body)
                if response.status_code >= 400:
                    failed += 1

        start = time.monotonic()
        for wave in sorted(waves):
            await asyncio.gather(*(send(c) for c in waves[wave]))
        elapsed = time.monotonic() - start
    return elapsed, failed


def run_bare(
    smartem: RealSmartEM, calls: list[Call], concurrency: int, expected: dict[str, int]
) -> dict[str, Any]:
    """The bare client posting em-agent's successful writes."""
    writes = [c for c in calls if c.method in ("POST", "PUT") and 200 <= c.status < 300]
    token = smartem.oidc.issue_token(lifetime_s=3600.0)
    elapsed, failed = asyncio.run(replay(writes, smartem.base_url, token, concurrency))
    total = sum(expected.values())
    counts = smartem.entity_counts()
    complete = failed == 0 and counts == expected
    if not complete:
        log(f"bare client: {failed} failed requests, counts {counts}")
    log(f"bare client: {total} entities in {elapsed:.1f} s ({len(writes)} requests)")
    return {
        "seconds": round(elapsed, 2),
        "entities_per_s": rate(total, elapsed),
        "complete": complete,
        "requests": len(writes),
    }


# -- SmartEM's reference agent -----------------------------------------------------------------------------------


def run_reference_agent(
    smartem: RealSmartEM, tool_bin: Path, visit: Path, work: Path, expected: dict[str, int], timeout_s: float
) -> dict[str, Any]:
    """``smartem-agent watch`` on a copy of ``visit`` until its initial scan is done ("..done!" in its log), or
    until nothing new arrived for 60 s, or ``timeout_s``; then it is interrupted as an operator would (SIGINT).

    Its rate is over that whole scan; ``seconds_to_last_entity`` is when its last row arrived (it goes on
    failing the rest of the scan after that)."""
    copy = work / "reference-visit"
    shutil.copytree(visit, copy)
    config = work / "reference-agent.env"
    config.write_text(
        f"KEYCLOAK_URL={smartem.oidc.base_url}\nKEYCLOAK_REALM={smartem.oidc.realm}\n"
        f"KEYCLOAK_CLIENT_ID={smartem.oidc.client_id}\nKEYCLOAK_CLIENT_SECRET={smartem.oidc.client_secret}\n"
    )
    config.chmod(0o600)
    log_path = work / "reference-agent.log"
    cmd = [str(tool_bin / "smartem-agent"), "watch", str(copy), "--api-url", smartem.base_url,
           "--config", str(config), "--heartbeat-interval", "0", "-v"]  # fmt: skip
    total = sum(expected.values())
    with log_path.open("wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        done_at: float | None = None
        last_count, last_change = -1, start
        try:
            while time.monotonic() - start < timeout_s and proc.poll() is None:
                time.sleep(1.0)
                if b"..done!" in log_path.read_bytes():
                    done_at = time.monotonic()
                    break
                count = sum(smartem.entity_counts().values())
                if count != last_count:
                    # When the count last changed: the arrival of its last entity, to within a poll.
                    last_count, last_change = count, time.monotonic()
                elif count > 0 and time.monotonic() - last_change > 60.0:
                    break  # stuck (its REST calls have no timeout): measure what arrived
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    by_kind = smartem.entity_counts()
    entities_in = sum(by_kind.values())
    elapsed = (done_at if done_at is not None else last_change) - start
    to_last = last_change - start
    errors = log_path.read_text(errors="replace").count(" - ERROR - ")
    log(
        f"reference agent: {entities_in}/{total} entities in {elapsed:.1f} s, scan finished: {done_at is not None}"
    )
    return {
        "seconds": round(elapsed, 2),
        "entities_per_s": rate(entities_in, elapsed),
        "entities_in": entities_in,
        "entities_total": total,
        "entities_in_by_kind": {k: f"{by_kind[k]}/{expected[k]}" for k in expected},
        "seconds_to_last_entity": round(to_last, 2),
        "entities_per_s_to_last_entity": rate(entities_in, to_last),
        "scan_finished": done_at is not None,
        "errors_logged": errors,
    }


# -- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    """Run every phase and print the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="medium", help="session preset (small, medium, large)")
    parser.add_argument("--agents", type=int, default=4, help="em-agents of the concurrent phase")
    parser.add_argument(
        "--reference-timeout", type=float, default=900.0, help="bound of the reference agent, s"
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-four", action="store_true")
    args = parser.parse_args()
    concurrency = IngestConfig(watch_dir=REPO).flush_concurrency
    work = Path(tempfile.mkdtemp(prefix="em-agent-smartem-bench-"))
    result: dict[str, Any] = {"benchmark": "smartem", "preset": args.preset, "cpus": os.cpu_count(),
                              "concurrency": concurrency}  # fmt: skip
    try:
        tool_bin = ensure_tool_venv("smartem", SMARTEM_REQUIREMENTS)
        visit = work / "visit"
        log(f"generating preset {args.preset} ...")
        manifest = generate(visit, preset=args.preset, seed=1)
        (visit / "manifest.json").unlink()
        expected = manifest.expected_counts(include_near_grid_bar=False).as_dict()
        result["entities"] = sum(expected.values())
        log("recording em-agent's requests against the testbed (smartem mode) ...")
        calls = asyncio.run(record_requests(visit, work))
        result["em_agent_requests"] = len(calls)
        with RealSmartEM(tool_bin, work / "real-smartem") as smartem:
            log(f"real SmartEM backend up at {smartem.base_url}")
            fresh(smartem)
            result["em_agent"] = run_em_agent(smartem, visit, work / "state-em-agent", expected)
            result["em_agent"]["parse_only_seconds"] = parse_only_seconds(visit)
            fresh(smartem)
            result["bare_client"] = run_bare(smartem, calls, concurrency, expected)
            ratio = result["em_agent"]["entities_per_s"] / max(result["bare_client"]["entities_per_s"], 1e-9)
            result["ratio"] = round(ratio, 2)
            result["meets_target"] = ratio >= TARGET_RATIO
            if not args.skip_reference:
                fresh(smartem)
                result["reference_agent"] = run_reference_agent(
                    smartem, tool_bin, visit, work, expected, args.reference_timeout
                )
            if not args.skip_four:
                visits: list[Path] = []
                together: dict[str, int] = dict.fromkeys(expected, 0)
                for i in range(args.agents):
                    other = work / f"visit-{i}"
                    counts = generate(other, preset=args.preset, seed=11 + i).expected_counts(
                        include_near_grid_bar=False
                    )
                    (other / "manifest.json").unlink()
                    visits.append(other)
                    for kind, n in counts.as_dict().items():
                        together[kind] += n
                fresh(smartem)
                result["four_agents"] = run_four_agents(smartem, visits, work, together)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
