"""The Windows service stop path, exercised on any platform: a stop request from the service-control thread
drains the daemon like SIGTERM, even when it arrives before the daemon is running."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from agent.app import run_daemon
from agent.service.windows import StopBridge, WindowsServiceUnavailable, control
from agent.settings import load_settings
from testbed.backend import BackendServer


def _settings(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    watch = tmp_path / "epu"
    watch.mkdir(exist_ok=True)
    return load_settings(
        None,
        {"state_dir": str(tmp_path / "state"), "backend": {"url": url}, "ingest": {"watch_dir": str(watch)}},
    )


async def test_service_stop_from_another_thread_drains_the_daemon(tmp_path: Path) -> None:
    bridge = StopBridge()
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        settings = _settings(tmp_path, backend.url)
        timer = threading.Timer(2.0, bridge.request_stop)  # the service control handler's thread
        timer.start()
        start = time.monotonic()
        code = await asyncio.wait_for(run_daemon(settings, stop_bridge=bridge), 30)
        timer.join()
    assert code == 0
    assert time.monotonic() - start < 20


async def test_stop_requested_before_the_daemon_runs_is_not_lost(tmp_path: Path) -> None:
    bridge = StopBridge()
    bridge.request_stop()  # SvcStop can arrive while the service is still starting
    with BackendServer(tmp_path / "b.sqlite3", port=0) as backend:
        code = await asyncio.wait_for(run_daemon(_settings(tmp_path, backend.url), stop_bridge=bridge), 30)
    assert code == 0


def test_windows_control_is_refused_clearly_elsewhere() -> None:
    import sys

    if sys.platform == "win32":
        # skip-policy: a platform guard, not a missing dependency
        pytest.skip("on Windows this would act on the real service manager")
    with pytest.raises(WindowsServiceUnavailable, match="only available on Windows"):
        control("start")
