"""Ingest benchmark: backlog import rate, live file-to-backend latency under bursts, and the agent's peak RSS.

Prints ONE JSON line on stdout (progress on stderr):

* ``backlog``: a generated visit (``--preset``, default ``large``) imported end to end by ``em-agent ingest --once``
  (a subprocess) into the testbed backend (strict mode): wall time, entities/s, and the agent's peak RSS (main
  process, and with its parser processes).
* ``live``: an in-process ``IngestService`` watching an empty folder while files of a generated session are
  copied in at ``--rate`` files/s (bursts of one second); latency from a micrograph file being complete to the
  backend confirming that micrograph: p50 / p99 / max.

Targets (issue 6): ``large`` imported in under 60 s, p99 latency under 1 s, peak RSS under 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from agent.ingest import EntityKind, IngestConfig, IngestService, OutboxItem, entity_uuid
from agent.state.database import open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy
from converters.paths import EpuFileKind, classify_path
from testbed.backend.server import BackendServer
from testbed.epu import generate

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[ingest-bench] {msg}", file=sys.stderr, flush=True)


def backlog(work: Path, preset: str) -> dict[str, Any]:
    visit = work / "visit"
    log(f"generating preset {preset} ...")
    t0 = time.monotonic()
    manifest = generate(visit, preset=preset, seed=1)
    log(f"generated {manifest.total_files} files in {time.monotonic() - t0:.1f}s")
    (visit / "manifest.json").unlink()
    expected = manifest.expected_counts(include_near_grid_bar=False).as_dict()
    total = sum(expected.values())
    with BackendServer(work / "backend.db", compat="strict") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
        cmd = [sys.executable, "-m", "agent.cli", "ingest", str(visit), "--once", "--json", "--no-progress",
               "--backend", server.url, "--state-dir", str(work / "state")]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        ps = psutil.Process(proc.pid)
        peak_main = peak_total = 0
        while proc.poll() is None:
            try:
                main = ps.memory_info().rss
                kids = sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.Error:
                break
            peak_main, peak_total = max(peak_main, main), max(peak_total, main + kids)
            time.sleep(0.1)
        out, _ = proc.communicate()
        elapsed = time.monotonic() - start
        counts = server_counts(server.url)
    ok = proc.returncode == 0 and all(counts.get(k) == v for k, v in expected.items())
    log(f"backlog: {elapsed:.1f}s rc={proc.returncode} counts ok={ok}")
    return {
        "preset": preset,
        "files": manifest.total_files,
        "entities": total,
        "seconds": round(elapsed, 2),
        "entities_per_s": round(total / elapsed, 1),
        "complete": ok,
        "peak_rss_mb": round(peak_main / 2**20, 1),
        "peak_rss_with_parsers_mb": round(peak_total / 2**20, 1),
        "agent_report": json.loads(out.strip().splitlines()[-1]) if out.strip() else None,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"backend at {url} did not come up")


def server_counts(url: str) -> dict[str, int]:
    import httpx

    return dict(httpx.get(f"{url}/testbed/counts", timeout=30).json())


async def live(
    work: Path, rate: int, limit: int, parse_processes: int, dump: Path | None = None
) -> dict[str, Any]:
    source = work / "live_source"
    log("generating the live source session (medium) ...")
    generate(source, preset="medium", seed=4, previews=False)
    order = {EpuFileKind.SESSION: 0, EpuFileKind.ATLAS: 1, EpuFileKind.GRIDSQUARE_METADATA: 2}
    files = [p for p in source.rglob("*") if p.is_file() and classify_path(p) is not None]
    files.sort(key=lambda p: (order.get(classify_path(p).kind, 3), str(p)))  # type: ignore[union-attr]
    files = files[:limit]
    target = work / "live"
    target.mkdir()
    written: dict[str, float] = {}
    confirmed: dict[str, float] = {}

    def on_confirmed(items: Sequence[OutboxItem]) -> None:
        now = time.monotonic()
        for item in items:
            confirmed.setdefault(item.uuid, now)

    # The backend runs in its own process, as it would in production: it must not share this GIL.
    port = _free_port()
    backend = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
        [sys.executable, "-m", "testbed.backend", "--port", str(port), "--db", str(work / "live_backend.db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(_wait_up, url)
    try:
        db = open_database(work / "live_state")
        client = AsyncSmartEMAPIClient(url, retry=RetryPolicy(attempts=3, timeout=5))
        config = IngestConfig(watch_dir=target, settle_time_s=0.1, parse_processes=parse_processes)
        service = IngestService(config, db, client)
        service.add_confirm_listener(on_confirmed)
        await service.start()
        acq = None
        log(f"copying {len(files)} files at {rate}/s ...")
        start = time.monotonic()
        for i, src in enumerate(files):
            if i and i % rate == 0:
                # One burst per second: sleep until the next second starts.
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            rel = src.relative_to(source)
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            info = classify_path(dst)
            if info is not None and info.kind is EpuFileKind.MICROGRAPH:
                acq = rel.parts[0]
                written[entity_uuid(acq, EntityKind.MICROGRAPH, dst.stem)] = time.monotonic()
            if i % 50 == 0:
                await asyncio.sleep(0)
        await service.wait_until_posted(timeout_s=120, quiet_s=3)
        await service.stop()
        await client.aclose()
        db.close()
    finally:
        backend.terminate()
        backend.wait(10)
    if dump is not None:
        # Per micrograph: seconds since the copy started, latency (where was the time lost, if anywhere).
        rows = sorted((t - start, confirmed[u] - t) for u, t in written.items() if u in confirmed)
        await asyncio.to_thread(dump.write_text, "\n".join(f"{a:.3f} {b:.3f}" for a, b in rows) + "\n")
    lat = sorted(confirmed[u] - t for u, t in written.items() if u in confirmed)
    missing = len(written) - len(lat)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

    log(f"live: {len(lat)} micrographs measured, p50={pct(0.5)} p99={pct(0.99)}")
    return {
        "rate_files_per_s": rate,
        "parse_processes": parse_processes,
        "files": len(files),
        "micrographs_measured": len(lat),
        "unconfirmed": missing,
        "latency_p50_s": pct(0.5),
        "latency_p99_s": pct(0.99),
        "latency_max_s": round(lat[-1], 3) if lat else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large", help="backlog preset (small, medium, large)")
    parser.add_argument("--rate", type=int, default=200, help="live phase: files per second")
    parser.add_argument("--live-files", type=int, default=3000, help="live phase: files copied")
    parser.add_argument("--live-parse-processes", type=int, default=2, help="live phase: parser processes")
    parser.add_argument(
        "--latency-dump", type=Path, default=None, help="live phase: write 'time latency' rows"
    )
    parser.add_argument("--skip-backlog", action="store_true")
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="em-agent-ingest-bench-"))
    result: dict[str, Any] = {"benchmark": "ingest", "cpus": os.cpu_count()}
    try:
        if not args.skip_backlog:
            result["backlog"] = backlog(work, args.preset)
        if not args.skip_live:
            result["live"] = asyncio.run(
                live(work, args.rate, args.live_files, args.live_parse_processes, args.latency_dump)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, lv = result.get("backlog"), result.get("live")
    result["targets"] = {
        "backlog_under_60s": None if b is None else (b["complete"] and b["seconds"] < 60),
        "p99_under_1s": None if lv is None or lv["latency_p99_s"] is None else lv["latency_p99_s"] < 1.0,
        "peak_rss_under_250mb": None if b is None else b["peak_rss_mb"] < 250,
    }
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
