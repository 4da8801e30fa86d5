"""Helpers shared by commands: the ``--config`` option and building settings from flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.settings import ConfigError, Settings, load_settings


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config PATH`` (TOML); ``EM_AGENT_CONFIG`` is not read, so the file is always explicit."""
    parser.add_argument("--config", type=Path, default=None, metavar="TOML", help="configuration file (TOML)")


def nested_overrides(pairs: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"backend.url": x}`` into ``{"backend": {"url": x}}``, dropping unset (None) flags."""
    out: dict[str, Any] = {}
    for dotted, value in pairs.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def settings_from_args(args: argparse.Namespace, flags: dict[str, Any] | None = None) -> Settings | None:
    """Load settings; on a configuration error print one clear line to stderr and return None."""
    try:
        return load_settings(getattr(args, "config", None), nested_overrides(flags or {}))
    except ConfigError as exc:
        print(f"em-agent: configuration error: {exc}", file=sys.stderr, flush=True)
        return None
