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
from typing import TYPE_CHECKING, Any, TextIO

import httpx

if TYPE_CHECKING:
    # Imported lazily at run time: loading testbed.backend pulls in FastAPI and uvicorn.
    from testbed.backend.options import AuthOptions

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
    auth = parser.add_argument_group(
        "authentication", "off unless --token or --client-id/--client-secret is given"
    )
    auth.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept this bearer token (never expires); repeatable",
    )
    auth.add_argument("--client-id", help="client of the OAuth2 client-credentials endpoint POST /auth/token")
    auth.add_argument(
        "--client-secret",
        help="that client's secret (visible in the process list: a testbed, not production)",
    )
    auth.add_argument(
        "--token-lifetime", type=float, default=300.0, help="lifetime of issued tokens, s (default 300)"
    )
    auth.add_argument(
        "--token-leeway", type=float, default=0.0, help="grace after a token's expiry, s (SmartEM: 60)"
    )
    auth.add_argument(
        "--keep-streams-on-expiry",
        action="store_true",
        help="do not end an open SSE stream when its token expires (SmartEM checks at connect only)",
    )


def _auth_options(args: argparse.Namespace) -> AuthOptions | None:
    """The ``AuthOptions`` the arguments ask for, ``None`` for an open backend; ``ValueError`` when they
    contradict each other."""
    from pydantic import ValidationError

    from testbed.backend.options import AuthOptions

    if not args.token and args.client_id is None and args.client_secret is None:
        return None
    try:
        return AuthOptions(
            static_tokens=tuple(args.token),
            client_id=args.client_id,
            client_secret=args.client_secret,
            token_lifetime_s=args.token_lifetime,
            leeway_s=args.token_leeway,
            end_streams_on_expiry=not args.keep_streams_on_expiry,
        )
    except ValidationError as exc:
        # The messages name fields and constraints, never the values (which may be secrets).
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'auth'}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None


def _run_backend(args: argparse.Namespace) -> int:
    from testbed.backend.server import serve

    if args.heartbeat_interval <= 0 or args.ping_interval <= 0 or args.expiry_sweep_interval <= 0:
        print("error: intervals must be > 0", file=sys.stderr)
        return 2
    try:
        auth = _auth_options(args)
    except ValueError as exc:
        print(f"error: authentication options: {exc}", file=sys.stderr)
        return 2
    if auth is None:
        auth_note = "no authentication"
    else:
        ways = [f"{len(auth.static_tokens)} static token(s)"] if auth.static_tokens else []
        if auth.client_id is not None:
            ways.append(f"client {auth.client_id!r} at /auth/token ({auth.token_lifetime_s:g} s tokens)")
        auth_note = "bearer auth: " + ", ".join(ways)
    print(
        f"testbed backend ({args.compat}) on http://{args.host}:{args.port}, database {args.db}, {auth_note}",
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
            auth=auth,
        )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- instruct ------------------------------------------------------------------------------------------------


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


def _client(url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client for the backend at ``url``. The CA bundle is loaded only for ``https``: loading it costs tens
    of milliseconds and plain HTTP never uses it."""
    return httpx.Client(base_url=url, timeout=10.0, headers=headers, verify=httpx.URL(url).scheme == "https")


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    try:
        response = client.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the backend at {client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise CliError(f"GET {path} -> HTTP {response.status_code}: {response.text[:500]}{_hint(response)}")
    return response.json()


def _hint(response: httpx.Response) -> str:
    return " (the backend requires authentication: pass --token)" if response.status_code == 401 else ""


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
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        with _client(args.backend, headers) as client:
            session_id = _resolve_session(client, args.session_id)
            try:
                response = client.post(f"/debug/session/{session_id}/create-instruction", json=body)
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach the backend at {args.backend}: {exc}") from exc
            if response.status_code >= 400:
                raise CliError(
                    f"create-instruction -> HTTP {response.status_code}: {response.text[:500]}{_hint(response)}"
                )
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
        with _client(args.backend) as client:
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
    instruct.add_argument("--token", help="bearer token for a backend that requires authentication")
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
