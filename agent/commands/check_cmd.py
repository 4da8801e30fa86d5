"""``em-agent check``: a preflight that prints one line per check and exits non-zero if any fails.

Checks: configuration, backend reachability, backend authentication, the agent session (when configured), the
watch folder, the state folder, the device and the decision service. Nothing is created on the backend; on the
device a check run and session are opened and closed and the metrics read (nothing moves); plus a temporary file
in the state folder. The backend and the device are reached through the clients :mod:`agent.app` builds for the
daemon (``backend_client`` for the REST calls and the instruction stream), so a passing check means the daemon's
own way of connecting works.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent import app
from agent.commands.common import add_config_argument, settings_from_args
from agent.connections import backend_auth
from agent.settings import ConfigError, Settings
from backend_client import paths
from backend_client.errors import AuthenticationError, BackendError, InvalidResponseError, SessionError
from backend_client.models import ConnectionEvent, ErrorEvent
from backend_client.operations import RequestSpec, parse_json

EXIT_CONFIG = 78
#: Bound of each backend probe, s (the connect timeout is the configured one).
PROBE_TIMEOUT_S = 10.0


@dataclass
class CheckResult:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False

    def line(self) -> str:
        """``[ OK ] name: detail``"""
        mark = "SKIP" if self.skipped else (" OK " if self.ok else "FAIL")
        return f"[{mark}] {self.name}: {self.detail}"


def check_backend(settings: Settings) -> CheckResult:
    """``GET /status`` answers (auth-exempt on SmartEM)."""
    url = settings.backend.url
    try:
        with app.unretried_backend_api(settings, None) as client:
            status = client.get_status()
    except InvalidResponseError as exc:
        return CheckResult("backend reachable", False, f"{url}: {exc}")
    except BackendError as exc:
        if exc.status_code is not None:
            return CheckResult("backend reachable", False, f"GET /status answered {exc.status_code}")
        return CheckResult("backend reachable", False, f"{url}: {exc}")
    return CheckResult("backend reachable", True, f"{url} (status {status.status})")


#: An authenticated read that creates nothing: SmartEM's acquisition list.
_AUTHENTICATED_READ: RequestSpec[Any] = RequestSpec(
    "list_acquisitions", "GET", paths.ACQUISITIONS, parse_json
)


def check_auth(settings: Settings) -> CheckResult:
    """An authenticated read (``GET /acquisitions``) succeeds with the configured credentials."""
    try:
        auth = backend_auth(settings.backend)
    except ConfigError as exc:
        return CheckResult("backend authentication", False, str(exc))
    kind = "no credentials configured" if auth is None else type(auth).__name__
    try:
        with app.unretried_backend_api(settings, auth) as client:
            client.request(_AUTHENTICATED_READ)
    except AuthenticationError as exc:
        if exc.method == "GET" and exc.status_code is not None:
            return CheckResult("backend authentication", False, f"rejected ({exc.status_code}) using {kind}")
        return CheckResult("backend authentication", False, str(exc))  # the token endpoint refused
    except BackendError as exc:
        if exc.status_code is None:
            return CheckResult("backend authentication", False, str(exc))
        if exc.status_code >= 500:
            return CheckResult(
                "backend authentication", False, f"GET /acquisitions answered {exc.status_code}"
            )
        # Another answer than 401/403 (a 404, a body that is not a list) means the credentials passed.
    finally:
        close = getattr(auth, "close", None)
        if callable(close):
            close()
    return CheckResult("backend authentication", True, f"accepted using {kind}")


def check_session(settings: Settings) -> CheckResult:
    """The instruction stream opens with a ``connection`` event (session exists, belongs to this agent).

    The stream is opened by :func:`agent.app.probe_instruction_stream`: the daemon's client, auth and path, one
    connection attempt, the first event read and the stream closed.
    """
    if not settings.session_id:
        return CheckResult("agent session", True, "no session_id: instructions disabled", skipped=True)
    base = settings.backend.url.rstrip("/")
    try:
        event = asyncio.run(app.probe_instruction_stream(settings, timeout_s=PROBE_TIMEOUT_S))
    except ConfigError as exc:
        return CheckResult("agent session", False, str(exc))
    except TimeoutError:
        return CheckResult("agent session", False, f"{base}: no stream event within {PROBE_TIMEOUT_S:g} s")
    except BackendError as exc:
        return CheckResult("agent session", False, _stream_failure(base, exc))
    if isinstance(event, ConnectionEvent):
        return CheckResult("agent session", True, f"{settings.session_id} accepts agent {settings.agent_id}")
    if isinstance(event, ErrorEvent):
        return CheckResult("agent session", False, f"{event.error}: {event.message or ''}")
    return CheckResult(
        "agent session", False, f"the stream opened with a {event.type} event, not a connection"
    )


def _stream_failure(base: str, exc: BackendError) -> str:
    """The line for a stream that did not open: the URL and the status when the backend answered."""
    if isinstance(exc, SessionError) and exc.status_code is None:
        return str(exc)  # a session_validation_failed event: the message names the session and the agent
    # Without reconnects the stream gives up at the first failure; the cause holds the status and the path.
    cause = exc.__cause__ if isinstance(exc.__cause__, BackendError) else exc
    if cause.status_code is not None and cause.path:
        answer = f"GET {base}{cause.path} answered {cause.status_code}"
        return answer + (f": {cause.detail}" if cause.detail else "")
    return f"{base}: {cause}"


def check_watch_dir(settings: Settings) -> CheckResult:
    """The watch folder exists and can be listed."""
    if settings.ingest is None:
        return CheckResult("watch folder", True, "no ingest.watch_dir: ingest disabled", skipped=True)
    folder = settings.ingest.watch_dir
    if not folder.is_dir():
        return CheckResult("watch folder", False, f"{folder} does not exist or is not a folder")
    try:
        next(os.scandir(folder), None)
    except OSError as exc:
        return CheckResult("watch folder", False, f"{folder} is not readable: {exc.strerror}")
    return CheckResult("watch folder", True, f"{folder} is readable")


def check_state_dir(settings: Settings) -> CheckResult:
    """The state folder can be created and written, and SQLite works there."""
    folder = settings.state_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-", suffix=".sqlite3") as tmp:
            conn = sqlite3.connect(tmp.name)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (x)")
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        return CheckResult("state folder", False, f"{folder} is not writable: {exc}")
    return CheckResult("state folder", True, f"{folder} is writable")


#: What the device line calls each backend.
_DEVICE_LABELS = {
    "simulator": "simulated SEM",
    "semphony": "Semphony control server",
    "openfibsem": "OpenFIBSEM",
}


def check_device(settings: Settings) -> CheckResult:
    """The configured microscope answers a call that must succeed, through the agent's own device layer.

    :func:`agent.app.device_client` builds the client, as it does the daemon's; a check run and session are
    opened (closed again), the device is attached and its metrics read (``GetMetrics``, which moves nothing).
    Any error fails the check: for a Semphony control server a 404 or 500 as much as a refused key, with the URL
    and the status in the line. A server that merely answers is not enough: it must be a control server that
    serves this device.
    """
    from agent.devices.errors import SemphonyApiError
    from agent.devices.semphony import ImagingDevice

    device = settings.device
    if device.backend == "none":
        return CheckResult(
            "device", True, "no device configured: device instructions are declined", skipped=True
        )
    where = _DEVICE_LABELS[device.backend]
    if device.backend == "semphony":
        if not device.url:
            return CheckResult("device", False, "device.backend = 'semphony' needs device.url")
        where = f"{where} {device.url.rstrip('/')}"
    try:
        client = app.device_client(app.device_options(device), timeout=10.0)
    except (ConfigError, ValueError, SemphonyApiError) as exc:
        return CheckResult("device", False, f"{where}: {exc}")
    try:
        with client.run(f"{device.run_name}-check").session() as session:
            sem = ImagingDevice(client, device_slug=device.device_slug)
            sem.attach(session)
            metrics = sem.imaging.get_metrics()
    except SemphonyApiError as exc:
        # The error names the method, the path and the HTTP status; `where` adds the server's URL.
        hints = {
            401: " (API key refused)",
            403: " (API key refused)",
            409: " (the device is attached to another session: is the agent running?)",
        }
        hint = hints.get(exc.status_code or 0, "")
        return CheckResult("device", False, f"{where}: {exc}{hint}")
    finally:
        client.close()
    return CheckResult("device", True, f"{where}: {_describe_metrics(metrics)}")


def _describe_metrics(metrics: dict[str, Any]) -> str:
    """``<manufacturer> <model> answered: vacuum <state>, stage x=... y=... mm`` from a metrics snapshot."""
    info = metrics.get("instrument") or {}
    stage = metrics.get("stage") or {}
    vacuum = metrics.get("vacuum") or {}
    who = " ".join(str(info[k]) for k in ("manufacturer", "model") if info.get(k)) or "the device"
    text = f"{who} answered GetMetrics: vacuum {vacuum.get('state', 'unknown')}"
    if isinstance(stage.get("x"), int | float) and isinstance(stage.get("y"), int | float):
        text += f", stage x={stage['x']:.3f} y={stage['y']:.3f} mm"
    return text


def check_decisions(settings: Settings) -> CheckResult:
    """The Athena decision service answers ``GET /api/v1/Athena/Status``."""
    url = settings.device.athena_url
    if not url:
        return CheckResult(
            "decision service", True, "not configured: reorder/skip are declined", skipped=True
        )
    try:
        resp = httpx.get(url.rstrip("/") + "/api/v1/Athena/Status", timeout=10.0)
    except httpx.HTTPError as exc:
        return CheckResult("decision service", False, f"{url}: {type(exc).__name__}: {exc}")
    ok = resp.status_code == 200
    return CheckResult("decision service", ok, f"{url} answered {resp.status_code}")


CHECKS: tuple[Callable[[Settings], CheckResult], ...] = (
    check_backend,
    check_auth,
    check_session,
    check_watch_dir,
    check_state_dir,
    check_device,
    check_decisions,
)


def run_checks(settings: Settings) -> list[CheckResult]:
    """Every check, in order; a check never raises."""
    results = []
    for check in CHECKS:
        try:
            results.append(check(settings))
        except Exception as exc:  # a preflight reports, it does not crash
            results.append(
                CheckResult(check.__name__.removeprefix("check_"), False, f"{type(exc).__name__}: {exc}")
            )
    return results


def _check(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {
        "backend.url": args.backend,
        "session_id": args.session_id,
        "agent_id": args.agent_id,
    }
    if args.watch is not None:
        flags["ingest.watch_dir"] = args.watch
    settings = settings_from_args(args, flags)
    if settings is None:
        print("[FAIL] configuration: see the error above", flush=True)
        return EXIT_CONFIG
    print("[ OK ] configuration: loaded", flush=True)
    results = run_checks(settings)
    for result in results:
        print(result.line(), flush=True)
    failed = [r for r in results if not r.ok]
    print(f"preflight: {len(results) - len(failed)} ok, {len(failed)} failing", flush=True)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check``."""
    parser = subparsers.add_parser(
        "check", help="preflight: test backend, auth, session, folders and devices"
    )
    add_config_argument(parser)
    parser.add_argument("--backend", default=None, metavar="URL")
    parser.add_argument("--agent-id", default=None)
    parser.add_argument("--session-id", default=None)
    parser.add_argument("--watch", type=Path, default=None, metavar="DIR")
    parser.set_defaults(func=_check)


__all__ = ["CheckResult", "run_checks"]
