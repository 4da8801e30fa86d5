"""``em-agent testbed epu``: generate synthetic EPU sessions, record live folders, replay recordings.

``register(subparsers)`` is called with the ``testbed`` group's subparsers and adds ``epu`` with the
subcommands
``generate``, ``record`` and ``replay``. Progress goes to stderr; a one-line JSON summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from testbed.epu.generator import GeneratorConfig, SessionGenerator, TimingMode, WriteEvent
from testbed.epu.plan import PRESETS
from testbed.epu.recorder import Recorder
from testbed.epu.recording import Recording, RecordingError
from testbed.epu.replayer import Replayer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``epu`` (with ``generate``, ``record``, ``replay``) to the ``testbed`` command group."""
    epu = subparsers.add_parser("epu", help="synthetic EPU sessions and epuplayer recordings")
    commands = epu.add_subparsers(dest="epu_command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="write a synthetic EPU visit and its manifest.json")
    gen.add_argument("out", type=Path, help="output folder (plays the EPU storage folder)")
    gen.add_argument("--preset", choices=sorted(PRESETS), default="small")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--grids", type=int, default=None, help="number of grids (default: the preset's)")
    gen.add_argument("--timing", choices=[m.value for m in TimingMode], default=TimingMode.FAST.value)
    gen.add_argument(
        "--speed", type=float, default=10.0, help="accelerated/bursts: virtual seconds per second"
    )
    gen.add_argument(
        "--duration", type=float, default=None, help="accelerated/bursts: fit the visit into N seconds"
    )
    gen.add_argument("--max-delay", type=float, default=None, help="cap on any single pause, seconds")
    gen.add_argument(
        "--disorder", type=float, default=0.0, help="probability a file is written before its parent"
    )
    gen.add_argument(
        "--partial-writes", type=float, default=0.0, help="probability a file is written in chunks"
    )
    gen.add_argument(
        "--rename-writes", type=float, default=0.0, help="probability a file is written by rename"
    )
    gen.add_argument(
        "--rename-rewrites",
        action="store_true",
        help="write every rewrite of a file by rename, never in place",
    )
    gen.add_argument(
        "--rename-pause",
        type=float,
        default=0.0,
        help="seconds between finishing a temporary file and its rename",
    )
    gen.add_argument("--no-previews", action="store_true", help="do not write JPEG previews")
    gen.add_argument("--quiet", action="store_true", help="no progress on stderr")
    gen.set_defaults(func=_generate)

    rec = commands.add_parser("record", help="record a live folder into an epuplayer .tar.gz")
    rec.add_argument("dir", type=Path, help="folder to watch")
    rec.add_argument("-o", "--output", type=Path, required=True, help="recording to write (.tar.gz)")
    rec.add_argument("--duration", type=float, default=None, help="stop after N seconds (default: Ctrl+C)")
    rec.add_argument(
        "--no-skip-binary-content", action="store_true", help="keep binary file bytes (default: placeholders)"
    )
    rec.set_defaults(func=_record)

    rep = commands.add_parser("replay", help="replay an epuplayer recording into a folder")
    rep.add_argument("recording", type=Path, help=".tar.gz recording (or legacy JSON)")
    rep.add_argument("dir", type=Path, help="target folder")
    mode = rep.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="speed 100, gaps capped at 1 s (the default)")
    mode.add_argument("--dev-mode", action="store_true", help="burst: about 1 ms per event")
    mode.add_argument("--exact", action="store_true", help="real time")
    rep.add_argument("-s", "--speed", type=float, default=None)
    rep.add_argument("--max-delay", type=float, default=None)
    rep.add_argument("--burst", action="store_true")
    rep.add_argument("--no-verify", action="store_true", help="skip content-hash checks")
    rep.add_argument("--skip-unreadable", action="store_true", help="skip events recorded as unreadable")
    rep.set_defaults(func=_replay)


def _progress(quiet: bool) -> Callable[[WriteEvent], None]:
    last = [0.0]

    def report(event: WriteEvent) -> None:
        now = time.monotonic()
        if quiet or (now - last[0] < 0.5 and event.index + 1 < event.total):
            return
        last[0] = now
        print(f"\r{event.index + 1}/{event.total} files  {event.rel_path[-70:]:<70}", end="", file=sys.stderr)
        if event.index + 1 == event.total:
            print(file=sys.stderr)

    return report


def _generate(args: argparse.Namespace) -> int:
    try:
        config = GeneratorConfig(
            preset=args.preset,
            seed=args.seed,
            grids=args.grids,
            timing=TimingMode(args.timing),
            speed=args.speed,
            duration_s=args.duration,
            max_delay_s=args.max_delay,
            disorder=args.disorder,
            partial_writes=args.partial_writes,
            rename_writes=args.rename_writes,
            rename_rewrites=args.rename_rewrites,
            rename_pause_s=args.rename_pause,
            previews=not args.no_previews,
        )
        generator = SessionGenerator(args.out, config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    manifest = generator.run(_progress(args.quiet))
    summary = {
        "out": str(args.out),
        "manifest": str(args.out / "manifest.json"),
        "files": manifest.total_files,
        "writes": generator.total,
        "entities": manifest.expected_counts().as_dict(),
        "seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(summary))
    return 0


def _record(args: argparse.Namespace) -> int:
    recorder = Recorder(args.dir, skip_binary_content=not args.no_skip_binary_content)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        recorder.start()
        print(f"recording {args.dir} (Ctrl+C to stop)", file=sys.stderr)
        stop.wait(args.duration)
    finally:
        signal.signal(signal.SIGINT, previous)
        recording = recorder.stop()
    path = recording.save(args.output)
    print(
        json.dumps({"recording": str(path), "events": len(recording.events), "chunks": len(recording.chunks)})
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        recording = Recording.load(args.recording)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    custom = args.speed is not None or args.max_delay is not None or args.burst
    if args.dev_mode:
        replayer = Replayer.dev_mode(recording, args.dir)
    elif args.exact:
        replayer = Replayer.exact(recording, args.dir)
    elif custom:
        replayer = Replayer(
            recording, args.dir, speed=args.speed or 1.0, max_delay=args.max_delay, burst=args.burst
        )
    else:
        replayer = Replayer.fast(recording, args.dir)
    replayer.verify = not args.no_verify
    replayer.skip_unreadable = args.skip_unreadable

    def progress(index: int, event: object) -> None:
        del event
        if (index + 1) % 50 == 0:
            print(f"\r{index + 1}/{len(recording.events)} events", end="", file=sys.stderr)

    try:
        result = replayer.replay(progress)
    except RecordingError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    # Unknown event kinds and fields (a newer or different recorder) are reported and skipped, not fatal.
    for warning in result.warnings[:20]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(result.warnings) > 20:
        print(f"... and {len(result.warnings) - 20} more warnings", file=sys.stderr)
    for mismatch in result.hash_mismatches[:5]:
        print(f"hash mismatch: {mismatch}", file=sys.stderr)
    print(
        json.dumps(
            {
                "applied": result.applied,
                "skipped": result.skipped,
                "warnings": len(result.warnings),
                "hash_mismatches": len(result.hash_mismatches),
                "seconds": round(result.wall_s, 3),
                "time_compression": round(result.compression, 1),
            }
        )
    )
    return 0 if not result.hash_mismatches else 1


__all__ = ["register"]
