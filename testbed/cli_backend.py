"""Operator commands of the testbed backend, registered under ``em-agent testbed``.

* ``backend``: serve the testbed backend in the foreground;
* ``instruct TYPE --payload JSON``: issue an instruction to an agent session;
* ``instructions``: list instructions with their lifecycle, or ``--watch`` them change.

``agent/commands/testbed_cmd.py`` calls :func:`register` with the ``testbed`` group's subparsers;
``python -m testbed.backend`` runs :func:`main` (the ``backend`` command alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_PRIORITIES = ("critical", "high", "normal", "low")


# -- backend -------------------------------------------------------------------------------------------------


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--db", type=Path, default=Path("testbed-backend.sqlite3"), help="SQLite file (kept across restarts)"
    )
    parser.add_argument(
        "--compat",
        choices=("strict", "smartem"),
        default="strict",
        help="strict: stricter than SmartEM, with compatible improvements; smartem: the real backend's quirks"
        " (default strict)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="SSE heartbeat event after this idle time, s"
    )
    parser.add_argument("--ping-interval", type=float, default=15.0, help="SSE ': ping' comment period, s")
    parser.add_argument(
        "--expiry-sweep-interval", type=float, default=30.0, help="expiry / stale-connection sweep period, s"
    )


def _run_backend(args: argparse.Namespace) -> int:
    from testbed.backend.server import serve

    if args.heartbeat_interval <= 0 or args.ping_interval <= 0 or args.expiry_sweep_interval <= 0:
        print("error: intervals must be > 0", file=sys.stderr)
        return 2
    print(
        f"testbed backend ({args.compat}) on http://{args.host}:{args.port}, database {args.db}",
        file=sys.stderr,
        flush=True,
    )
    try:
        serve(
            args.db,
            port=args.port,
            host=args.host,
            compat=args.compat,
            heartbeat_interval=args.heartbeat_interval,
            ping_interval=args.ping_interval,
            expiry_sweep_interval=args.expiry_sweep_interval,
        )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- instruct ------------------------------------------------------------------------------------------------


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    try:
        response = client.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the backend at {client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise CliError(f"GET {path} -> HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def _resolve_session(client: httpx.Client, session_id: str | None) -> str:
    """The given session, else the only active one (an error when there are none or several)."""
    if session_id:
        return session_id
    sessions = _get(client, "/debug/sessions").get("active_sessions", [])
    if len(sessions) == 1:
        return str(sessions[0]["session_id"])
    if not sessions:
        raise CliError("no active agent session on the backend; create one or pass --session-id")
    listed = ", ".join(f"{s['session_id']} (agent {s['agent_id']})" for s in sessions)
    raise CliError(f"several active sessions, pass --session-id: {listed}")


def _run_instruct(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"error: --payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if args.expires_in is not None and args.expires_in <= 0:
        print("error: --expires-in must be > 0 seconds", file=sys.stderr)
        return 2
    body: dict[str, Any] = {
        "instruction_type": args.type,
        "payload": payload,
        "priority": args.priority,
        "expires_in_minutes": None if args.expires_in is None else args.expires_in / 60.0,
    }
    if args.sequence_number is not None:
        body["sequence_number"] = args.sequence_number
    try:
        with httpx.Client(base_url=args.backend, timeout=10.0) as client:
            session_id = _resolve_session(client, args.session_id)
            try:
                response = client.post(f"/debug/session/{session_id}/create-instruction", json=body)
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach the backend at {args.backend}: {exc}") from exc
            if response.status_code >= 400:
                raise CliError(f"create-instruction -> HTTP {response.status_code}: {response.text[:500]}")
            created = response.json()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"session_id": session_id, **created}))
    return 0


# -- instructions --------------------------------------------------------------------------------------------


def _summary(item: dict[str, Any]) -> str:
    acks = [a for a in item.get("acknowledgements", []) if a.get("outcome") != "rejected"]
    ack = acks[-1]["status"] if acks else "-"
    return (
        f"{item['instruction_id']}  {item['instruction_type']:<40} {item['priority']:<8} "
        f"{item['status']:<12} ack={ack:<9} deliveries={len(item.get('deliveries', []))} "
        f"retries={item['retry_count']}"
    )


def _state_key(item: dict[str, Any]) -> tuple[Any, ...]:
    return (
        item["status"],
        item.get("ack_status"),
        len(item.get("deliveries", [])),
        len(item.get("acknowledgements", [])),
        item["retry_count"],
    )


def watch_instructions(
    client: httpx.Client,
    *,
    session_id: str | None,
    interval: float,
    out: TextIO,
    iterations: int | None = None,
    as_json: bool = False,
) -> None:
    """Print every instruction once, then a line each time one changes state. ``iterations`` bounds the number
    of polls (``None``: until interrupted)."""
    seen: dict[str, tuple[Any, ...]] = {}
    done = 0
    while iterations is None or done < iterations:
        for item in _get(client, "/testbed/instructions", session_id=session_id):
            key = _state_key(item)
            if seen.get(item["instruction_id"]) != key:
                seen[item["instruction_id"]] = key
                out.write((json.dumps(item) if as_json else _summary(item)) + "\n")
                out.flush()
        done += 1
        if iterations is None or done < iterations:
            time.sleep(interval)


def _run_instructions(args: argparse.Namespace) -> int:
    try:
        with httpx.Client(base_url=args.backend, timeout=10.0) as client:
            if args.watch:
                watch_instructions(
                    client,
                    session_id=args.session_id,
                    interval=args.interval,
                    out=sys.stdout,
                    as_json=args.json,
                )
            else:
                items = _get(client, "/testbed/instructions", session_id=args.session_id)
                for item in items:
                    print(json.dumps(item) if args.json else _summary(item))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


# -- registration --------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backend``, ``instruct`` and ``instructions`` to the ``testbed`` command group."""
    backend = subparsers.add_parser("backend", help="run the SmartEM-compatible testbed backend")
    _add_backend_arguments(backend)
    backend.set_defaults(func=_run_backend)

    instruct = subparsers.add_parser("instruct", help="issue an instruction to an agent session")
    instruct.add_argument("type", help="instruction type, e.g. microscope.control.move_stage")
    instruct.add_argument("--payload", default="{}", help="payload as a JSON object (default {})")
    instruct.add_argument("--backend", default=DEFAULT_URL, help=f"backend URL (default {DEFAULT_URL})")
    instruct.add_argument("--session-id", help="target session (default: the only active one)")
    instruct.add_argument("--priority", choices=_PRIORITIES, default="normal")
    instruct.add_argument("--sequence-number", type=int)
    instruct.add_argument("--expires-in", type=float, default=3600.0, help="expiry in seconds (default 3600)")
    instruct.set_defaults(func=_run_instruct)

    listing = subparsers.add_parser("instructions", help="list instructions and their lifecycle")
    listing.add_argument("--backend", default=DEFAULT_URL, help=f"backend URL (default {DEFAULT_URL})")
    listing.add_argument("--session-id", help="only this session")
    listing.add_argument("--watch", action="store_true", help="keep polling and print each change")
    listing.add_argument("--interval", type=float, default=1.0, help="poll period for --watch, s")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_run_instructions)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.backend``: the ``backend`` command on its own."""
    parser = argparse.ArgumentParser(
        prog="python -m testbed.backend", description="SmartEM-compatible testbed backend"
    )
    _add_backend_arguments(parser)
    return _run_backend(parser.parse_args(argv))


__all__ = ["main", "register", "watch_instructions"]
