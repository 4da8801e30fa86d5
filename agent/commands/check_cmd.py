"""``em-agent check``: a preflight that prints one line per check and exits non-zero if any fails.

Checks: configuration, backend reachability, backend authentication, the agent session (when configured), the
watch folder, the state folder, the device and the decision service. Nothing is created on the backend or the
microscope: reads only, plus a temporary file in the state folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.commands.common import add_config_argument, settings_from_args
from agent.connections import backend_auth, backend_verify
from agent.settings import ConfigError, Settings

EXIT_CONFIG = 78


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


def _http(settings: Settings, auth: httpx.Auth | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=settings.backend.url,
        timeout=httpx.Timeout(10.0, connect=settings.backend.connect_timeout_s),
        verify=backend_verify(settings.backend),
        auth=auth,
    )


def check_backend(settings: Settings) -> CheckResult:
    """``GET /status`` answers (auth-exempt on SmartEM)."""
    try:
        with _http(settings) as http:
            resp = http.get("/status")
    except httpx.HTTPError as exc:
        return CheckResult("backend reachable", False, f"{settings.backend.url}: {type(exc).__name__}: {exc}")
    if resp.status_code != 200:
        return CheckResult("backend reachable", False, f"GET /status answered {resp.status_code}")
    return CheckResult(
        "backend reachable", True, f"{settings.backend.url} (status {resp.json().get('status')})"
    )


def check_auth(settings: Settings) -> CheckResult:
    """An authenticated read (``GET /acquisitions``) succeeds with the configured credentials."""
    try:
        auth = backend_auth(settings.backend)
    except ConfigError as exc:
        return CheckResult("backend authentication", False, str(exc))
    try:
        with _http(settings, auth) as http:
            resp = http.get("/acquisitions")
    except httpx.HTTPError as exc:
        return CheckResult("backend authentication", False, f"{type(exc).__name__}: {exc}")
    kind = "no credentials configured" if auth is None else type(auth).__name__
    if resp.status_code in (401, 403):
        return CheckResult("backend authentication", False, f"rejected ({resp.status_code}) using {kind}")
    if resp.status_code >= 500:
        return CheckResult("backend authentication", False, f"GET /acquisitions answered {resp.status_code}")
    return CheckResult("backend authentication", True, f"accepted using {kind}")


def check_session(settings: Settings) -> CheckResult:
    """The instruction stream opens with a ``connection`` event (session exists, belongs to this agent)."""
    if not settings.session_id:
        return CheckResult("agent session", True, "no session_id: instructions disabled", skipped=True)
    path = f"/agent/{settings.agent_id}/session/{settings.session_id}/instructions/stream"
    try:
        auth = backend_auth(settings.backend)
        with (
            _http(settings, auth) as http,
            http.stream("GET", path, headers={"Accept": "text/event-stream"}) as resp,
        ):
            if resp.status_code != 200:
                return CheckResult("agent session", False, f"stream answered {resp.status_code}")
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    data: dict[str, Any] = json.loads(line[5:].strip())
                    if data.get("type") == "connection":
                        return CheckResult(
                            "agent session", True, f"{settings.session_id} accepts agent {settings.agent_id}"
                        )
                    return CheckResult(
                        "agent session",
                        False,
                        f"{data.get('error', data.get('type'))}: {data.get('message', '')}",
                    )
    except (httpx.HTTPError, ConfigError, ValueError) as exc:
        return CheckResult("agent session", False, f"{type(exc).__name__}: {exc}")
    return CheckResult("agent session", False, "stream ended without a connection event")


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


def check_device(settings: Settings) -> CheckResult:
    """The configured microscope backend is usable."""
    device = settings.device
    if device.backend == "none":
        return CheckResult(
            "device", True, "no device configured: device instructions are declined", skipped=True
        )
    if device.backend == "simulator":
        return CheckResult("device", True, "simulated SEM (no hardware)")
    if device.backend == "openfibsem":
        return check_openfibsem(settings)
    if not device.url:
        return CheckResult("device", False, "device.backend = 'semphony' needs device.url")
    try:
        key = device.resolved_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = httpx.get(device.url.rstrip("/") + "/api/prompts", headers=headers, timeout=10.0)
    except (httpx.HTTPError, ConfigError) as exc:
        return CheckResult("device", False, f"{device.url}: {type(exc).__name__}: {exc}")
    if resp.status_code in (401, 403):
        return CheckResult("device", False, f"Semphony rejected the API key ({resp.status_code})")
    return CheckResult("device", True, f"Semphony control server {device.url} answered {resp.status_code}")


def check_openfibsem(settings: Settings) -> CheckResult:
    """Connect through OpenFIBSEM, attach the microscope and read its metrics: that call must succeed."""
    from agent.devices.errors import SemphonyApiError
    from agent.devices.factory import create_client
    from agent.devices.semphony import ImagingDevice

    device = settings.device
    client = create_client("openfibsem", openfibsem=device.openfibsem, device_slug=device.device_slug)
    try:
        with client.run(f"{device.run_name}-check").session() as session:
            sem = ImagingDevice(client, device_slug=device.device_slug)
            sem.attach(session)
            metrics = sem.imaging.get_metrics()
    except SemphonyApiError as exc:
        return CheckResult("device", False, f"OpenFIBSEM: {exc}")
    finally:
        client.close()
    info, stage = metrics["instrument"], metrics["stage"]
    return CheckResult(
        "device",
        True,
        f"OpenFIBSEM {info['manufacturer']} {info['model']} answered: vacuum {metrics['vacuum']['state']}, "
        f"stage x={stage['x']:.3f} y={stage['y']:.3f} mm",
    )


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
