"""``em-agent run``: the daemon (ingest + instructions); parses the flags, :mod:`agent.app` composes and runs it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent import app
from agent.commands.common import add_config_argument, settings_from_args
from agent.logging_setup import configure_logging

EXIT_CONFIG = app.EXIT_CONFIG


def _run(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {
        "agent_id": args.agent_id,
        "session_id": args.session_id,
        "state_dir": args.state_dir,
        "backend.url": args.backend,
        "device.backend": args.device,
        "logging.level": args.log_level,
    }
    if args.watch is not None:
        flags["ingest.watch_dir"] = args.watch
    settings = settings_from_args(args, flags)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.logging)
    return app.run(settings)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run``."""
    parser = subparsers.add_parser(
        "run",
        help="run the agent: watch EPU output and execute backend instructions",
        description="Run the daemon until SIGTERM/SIGINT (a second signal exits at once). Flags override the "
        "configuration file and EM_AGENT_* variables. Exit codes: 0 clean stop, 1 failure, 78 configuration "
        "error, 130 forced exit.",
    )
    add_config_argument(parser)
    parser.add_argument("--watch", type=Path, default=None, metavar="DIR", help="EPU output folder to watch")
    parser.add_argument("--backend", default=None, metavar="URL", help="SmartEM-compatible backend URL")
    parser.add_argument("--agent-id", default=None, metavar="ID", help="this agent's id")
    parser.add_argument(
        "--session-id", default=None, metavar="ID", help="agent session id (enables instructions)"
    )
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR", help="durable state folder")
    parser.add_argument(
        "--device",
        choices=["none", "simulator", "semphony", "openfibsem"],
        default=None,
        help="microscope backend",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    parser.set_defaults(func=_run)
