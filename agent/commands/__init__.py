"""Sub-commands of ``em-agent``; each module exposes ``register(subparsers)``.

Modules whose optional dependencies are missing (for example the testbed extra) are skipped by the parser, so a
production install without extras still has a working ``em-agent --help``.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Protocol, cast

COMMAND_MODULES = (
    "run_cmd",
    "instructions_cmd",
    "ingest_cmd",
    "parse_cmd",
    "config_cmd",
    "check_cmd",
    "autofocus_cmd",
    "service_cmd",
    "demo",
    "testbed_cmd",
)


class CommandModule(Protocol):
    """What a command module provides."""

    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add the module's sub-command(s)."""


def load_command_module(name: str) -> CommandModule | None:
    """Import ``agent.commands.<name>``; None if it (or an optional dependency it needs) is not installed."""
    try:
        module: ModuleType = importlib.import_module(f"agent.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and (
            exc.name == f"agent.commands.{name}" or not exc.name.startswith(("agent", "converters"))
        ):
            return None
        raise
    return cast(CommandModule, module)
