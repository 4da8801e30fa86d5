"""``em-agent instructions``: the stand-alone instruction runner (instructions only, no ingest).

It parses its options into :class:`~agent.settings.Settings` and runs the daemon that :mod:`agent.app` composes
from them, the same as ``em-agent run --session-id`` without ``--watch``: instruction service, heartbeat, status
line, and ``agent.config.update`` applied to all three. It logs as plain text to stderr and runs until
SIGTERM/SIGINT. Tests and the soak run it as a subprocess so that it can be SIGKILLed and restarted on the same
state directory. Exit codes: 0 clean stop, 1 failure, 78 configuration error, 130 forced exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from agent import app
from agent.settings import ConfigError, load_settings

log = logging.getLogger("agent.instructions.runner")  # the name operators grep for; kept from its old home

#: The device API key comes from the environment only (the settings' own variable), never from a flag.
API_KEY_ENV = "EM_AGENT_DEVICE__API_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``instructions`` sub-command."""
    p = subparsers.add_parser(
        "instructions",
        help="run the instruction service alone (no ingest), logging plain text to stderr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(p)
    p.set_defaults(func=run)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, help="SmartEM-compatible backend URL")
    p.add_argument("--agent-id", required=True)
    p.add_argument("--session-id", required=True)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--device", default="none", choices=["none", "simulator", "semphony", "openfibsem"])
    p.add_argument("--device-url", default=None, help=f"Semphony URL (API key from ${API_KEY_ENV})")
    p.add_argument("--device-slug", default="sem-001")
    p.add_argument("--athena-url", default=None, help="Athena decision-service URL")
    p.add_argument("--athena-session-id", default=None)
    p.add_argument("--config-json", default="{}", help="ExecutorConfig fields as a JSON object")
    p.add_argument("--sse-retry-delay", type=float, default=1.0, help="first SSE reconnect delay, s")
    p.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="agent heartbeat POST period, s (0: none)"
    )
    p.add_argument("--log-level", default="INFO")


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the runner's options stand for (the rest: defaults and ``EM_AGENT_*`` variables)."""
    device: dict[str, Any] = {"backend": args.device, "device_slug": args.device_slug}
    for key, value in (
        ("url", args.device_url),
        ("athena_url", args.athena_url),
        ("athena_session_id", args.athena_session_id),
    ):
        if value is not None:
            device[key] = value
    return {
        "agent_id": args.agent_id,
        "session_id": args.session_id,
        "state_dir": args.state_dir,
        "backend": {"url": args.backend, "heartbeat_interval_s": args.heartbeat_interval},
        "device": device,
        "instructions": json.loads(args.config_json),
        "logging": {"level": args.log_level},
    }


def run(args: argparse.Namespace) -> int:
    """Run the instruction daemon until SIGTERM/SIGINT; the exit code."""
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        settings = load_settings(None, settings_overrides(args))
    except (ConfigError, ValueError) as exc:  # ValueError: --config-json is not JSON
        print(f"em-agent instructions: configuration error: {exc}", file=sys.stderr, flush=True)
        return app.EXIT_CONFIG

    async def started() -> None:
        log.info("instructions.runner_started", extra={"pid": os.getpid()})

    return app.run(settings, on_started=started, stream_retry_delay_s=args.sse_retry_delay)
