"""The ``em-agent`` console script.

Each command lives in a module of ``agent.commands`` (or, for stand-ins, ``testbed``) that exposes
``register(subparsers)``; this module only assembles them. Exit codes: 0 success, 1 failure, 2 usage error,
78 configuration error (``EX_CONFIG``: systemd does not restart on it), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from agent.commands import COMMAND_MODULES, load_command_module

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130


def _version() -> str:
    try:
        return metadata.version("em-agent")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available command."""
    parser = argparse.ArgumentParser(
        prog="em-agent",
        description="Microscope-side agent: EPU ingest into a SmartEM-compatible backend, and backend "
        "instructions executed on the SEM.",
    )
    parser.add_argument("--version", action="version", version=f"em-agent {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = load_command_module(name)
        if module is not None:
            module.register(subparsers)
    return parser


def _safe_console() -> None:
    """Never crash on a console code page that cannot encode a character (Windows cp1252/cp437), and never hold
    output in a buffer (service consoles and pipes are block-buffered by default)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace", line_buffering=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    _safe_console()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`em-agent config show | head`): not an error; silence the final flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
