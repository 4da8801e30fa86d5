"""``python -m agent.ingest DIR ...``: the ``em-agent ingest`` command without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from agent.commands import ingest_cmd


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as ``em-agent ingest`` arguments and run the command."""
    parser = argparse.ArgumentParser(prog="python -m agent.ingest")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest_cmd.register(sub)
    args = parser.parse_args(["ingest", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
