"""``em-agent testbed ...``: the local stand-ins (backend, EPU generator/recorder/replayer, operator CLI).

The testbed is a development and test tool, not part of the running agent: it is imported only here and in the
demo, and only when the ``testbed`` extra is installed.
"""

from __future__ import annotations

import argparse


def _missing(args: argparse.Namespace) -> int:
    print("em-agent: the testbed needs the 'testbed' extra: pip install 'em-agent[testbed]'", flush=True)
    return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``testbed`` command group."""
    parser = subparsers.add_parser(
        "testbed", help="local stand-ins: backend, EPU session generator, operator CLI"
    )
    group = parser.add_subparsers(dest="testbed_command", metavar="TOOL", required=True)
    try:
        from testbed.cli_backend import register as register_backend
        from testbed.cli_epu import register as register_epu
    except ImportError:
        parser.set_defaults(func=_missing)
        group.required = False
        return
    register_backend(group)
    register_epu(group)
