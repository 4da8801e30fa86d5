"""``em-agent ingest DIR``: import an EPU folder into the backend (``--once``), or keep watching it.

``--once`` exits when every file found has been posted (exit 0), or with 1 when something could not be posted at
all: entities the backend rejected or that still wait for a parent (they stay in the state database for the next
run), files that could not be parsed, or a folder without any EPU file; 2 on a configuration error. Parents whose
own files are missing (a partial or archived folder) are built from their children's paths once the whole folder
has been read, so they do not count as failures. The final report lists what the folder lacked (no
``EpuSession.dm``, no ``Metadata/``, atlas not found, parents synthesized; see :mod:`converters.findings`) and
what could not be posted. ``--dry-run`` parses and reports without a backend, using a throw-away state
database. A progress bar is shown on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.ingest.config import IngestConfig
from agent.state.database import Database, open_database
from converters.findings import Finding, FindingCode

if TYPE_CHECKING:
    from agent.ingest.service import IngestService


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ingest`` subcommand."""
    p = subparsers.add_parser(
        "ingest",
        help="import an EPU folder into the backend",
        description="Ingest an EPU folder: --once for a backlog import that exits when everything is posted.",
    )
    p.add_argument("watch_dir", type=Path, metavar="DIR", help="EPU session folder, or a folder of sessions")
    p.add_argument("--once", action="store_true", help="exit when the folder is fully posted")
    p.add_argument("--dry-run", action="store_true", help="parse and report; no backend, throw-away state")
    p.add_argument("--backend", default=None, metavar="URL", help="backend URL (default: configuration)")
    p.add_argument("--state-dir", type=Path, default=None, help="state directory (default: configuration)")
    p.add_argument("--config", type=Path, default=None, metavar="TOML", help="configuration file (TOML)")
    p.add_argument("--observer", choices=["auto", "native", "polling"], default=None)
    p.add_argument(
        "--settle-time", type=float, default=None, metavar="S", help="seconds a file must be stable"
    )
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="--once: give up after S seconds")
    p.add_argument(
        "--quiet-time", type=float, default=5.0, metavar="S", help="--once: idle time before giving up"
    )
    p.add_argument(
        "--parse-processes",
        type=int,
        default=None,
        metavar="N",
        help="parser processes (default: up to 2 with --once, else the configuration)",
    )
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.add_argument("--json", action="store_true", help="print the final report as one JSON line")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, base: IngestConfig | None) -> IngestConfig:
    data: dict[str, Any] = base.model_dump() if base is not None else {}
    data["watch_dir"] = args.watch_dir.resolve()
    if args.observer is not None:
        data["observer"] = args.observer
    if args.settle_time is not None:
        data["settle_time_s"] = args.settle_time
    if args.once or args.dry_run:
        # A backlog: parse on every core and send each entity once, complete, after the scan.
        data["parse_processes"] = min(2, os.cpu_count() or 1)
        data["hold_flush_until_scanned"] = True
        # The whole folder has been read: a parent whose file is not there will not come (archived, partial).
        data["synthesize_when_scanned"] = True
    if args.parse_processes is not None:
        data["parse_processes"] = args.parse_processes
    return IngestConfig.model_validate(data)


def run(args: argparse.Namespace) -> int:
    """Run the command (returns the exit code)."""
    if not args.watch_dir.is_dir():
        print(f"em-agent ingest: {args.watch_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        from agent.settings import load_settings

        overrides: dict[str, Any] = {}
        if args.backend:
            overrides["backend"] = {"url": args.backend}
        if args.state_dir:
            overrides["state_dir"] = args.state_dir
        settings = load_settings(args.config, overrides)
    except Exception as exc:  # configuration problems are reported, not raised
        print(f"em-agent ingest: configuration error: {exc}", file=sys.stderr)
        return 2
    config = _config(args, settings.ingest)
    return asyncio.run(_main(args, config, settings))


async def _main(args: argparse.Namespace, config: IngestConfig, settings: Any) -> int:
    # Imported here, not at the top: parser processes (spawn) re-import this module as the main module and
    # need none of the service's dependencies.
    from agent.ingest.service import IngestService

    tmp: tempfile.TemporaryDirectory[str] | None = None
    client: Any = None
    if args.dry_run:
        tmp = tempfile.TemporaryDirectory(prefix="em-agent-dry-run-")
        db: Database = open_database(Path(tmp.name))
    else:
        from agent.connections import backend_auth, backend_client_options
        from backend_client.async_client import AsyncSmartEMAPIClient
        from backend_client.retry import RetryPolicy

        db = open_database(Path(settings.state_dir))
        client = AsyncSmartEMAPIClient(
            settings.backend.url,
            **backend_client_options(settings.backend, backend_auth(settings.backend)),
            # Short per-call retries: the flusher keeps the work and retries for as long as it takes.
            retry=RetryPolicy(attempts=3, timeout=10.0, wait_initial=0.2, wait_max=2.0),
        )
    service = IngestService(config, db, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await service.start()
        progress = _Progress(service, enabled=not args.no_progress and sys.stderr.isatty())
        progress_task = asyncio.create_task(progress.run())
        if args.once or args.dry_run:
            done = asyncio.create_task(
                service.wait_until_posted(timeout_s=args.timeout, quiet_s=args.quiet_time)
            )
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if done.done():
                code = 0 if done.result() else 1
            else:
                done.cancel()
                code = 130
        else:
            await stop.wait()
        progress_task.cancel()
        progress.close()
    finally:
        await service.stop()
        report = {**service.snapshot(), "datastore": service.datastore_info()}
        findings = await asyncio.to_thread(service.findings)
        report["findings"] = [f.as_dict() for f in findings]
        report["not_posted"] = _not_posted(report, findings, dry_run=args.dry_run, posted=code == 0)
        if code == 0 and report["not_posted"]:
            code = 1
        if args.json:
            print(json.dumps(report, default=str), flush=True)
        else:
            _print_report(report, dry_run=args.dry_run)
        if client is not None:
            await client.aclose()
        db.close()
        if tmp is not None:
            tmp.cleanup()
    return code


def _not_posted(report: dict[str, Any], findings: list[Finding], *, dry_run: bool, posted: bool) -> list[str]:
    """What could not be posted at all (a non-empty list makes the exit code 1)."""
    out: list[str] = []
    if any(f.code is FindingCode.NO_EPU_FILES for f in findings):
        out.append("no EPU files found: nothing to post")
    failed = report["datastore"]["files"].get("failed", 0)
    if failed:
        out.append(f"{failed} file(s) could not be parsed (see 'last error' and the log)")
    orphans = sum(report["orphans"].values())
    if orphans:
        out.append(f"{orphans} entities wait for a parent that could not be built: {report['orphans']}")
    if not dry_run and not posted and not orphans:
        depth = report["outbox_depth"]
        out.append(f"{depth} entities not confirmed by the backend (rejected, or it was unavailable)")
    return out


def _print_report(report: dict[str, Any], *, dry_run: bool) -> None:
    entities = report["datastore"]["entities"]
    print(
        f"files: seen {report['files_seen']}, processed {report['files_processed']}, "
        f"unchanged {report['files_unchanged']}, failed {report['files_failed']}"
    )
    for kind, counts in sorted(entities.items()):
        state = "parsed" if dry_run else f"created {counts['created']}"
        print(
            f"  {kind:<11} {counts['known']:>7} known, {state}, skipped {counts['skipped']}, "
            f"pending {counts['pending']}"
        )
    if report["orphans"]:
        print(f"orphans: {report['orphans']} (oldest {report['oldest_orphan_age_s']} s)")
    if report["parents_synthesized"]:
        print(
            f"parents synthesized from file paths: {report['parents_synthesized']}"
            f" (completed since by their own files: {report['parents_completed'] or 0})"
        )
    if report["findings"]:
        print("the folder lacked:")
        for finding in report["findings"]:
            print(f"  {finding['folder']}: {finding['message']}")
    for line in report["not_posted"]:
        print(f"not posted: {line}")
    if report["last_error"]:
        print(f"last error: {report['last_error']}")
    sys.stdout.flush()


class _Progress:
    """tqdm bar of files processed and outbox depth, only on a terminal."""

    def __init__(self, service: IngestService, *, enabled: bool) -> None:
        self._service = service
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="file", desc="ingest", file=sys.stderr)

    async def run(self) -> None:
        while self._bar is not None:
            m = self._service.metrics
            done = m.files_processed + m.files_unchanged + m.files_failed
            self._bar.total = max(m.files_seen, done)
            self._bar.n = done
            depth = await asyncio.to_thread(self._service.store.outbox_depth)
            self._bar.set_postfix(outbox=depth, refresh=False)
            self._bar.refresh()
            await asyncio.sleep(0.5)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
