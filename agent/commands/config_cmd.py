"""``em-agent config show``: the effective configuration (defaults < file < environment < flags), secrets masked."""

from __future__ import annotations

import argparse
import json

from agent.commands.common import add_config_argument, settings_from_args
from agent.settings import masked_dump

EXIT_CONFIG = 78


def _show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings is None:
        return EXIT_CONFIG
    print(json.dumps(masked_dump(settings), indent=2, sort_keys=True), flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config show``."""
    parser = subparsers.add_parser("config", help="inspect the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the effective configuration with secrets masked")
    add_config_argument(show)
    show.set_defaults(func=_show)
    register_example(sub)


def _example(args: argparse.Namespace) -> int:
    from agent.config_example import render_example

    print(render_example(), end="", flush=True)
    return 0


def register_example(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config example``."""
    example = sub.add_parser("example", help="print a complete commented example configuration (TOML)")
    example.set_defaults(func=_example)
