"""Windows service (pywin32): ``em-agent service install|start|stop|remove`` on the microscope PC.

The service runs the same daemon as ``em-agent run`` with the configuration file given at install time. A service
stop request is turned into the daemon's graceful stop (drain, bounded), exactly like SIGTERM on Linux. pywin32 is
imported lazily so this module can be imported (and its helpers tested) on any platform.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVICE_NAME = "em-agent"
SERVICE_DISPLAY_NAME = "em-agent (EPU ingest and SmartEM instructions)"
SERVICE_DESCRIPTION = (
    "Watches the EPU output folder, posts it to the SmartEM backend and executes its instructions."
)
CONFIG_REGISTRY_VALUE = "ConfigFile"


class WindowsServiceUnavailable(RuntimeError):
    """pywin32 is missing or this is not Windows."""


def _win32() -> tuple[Any, Any, Any, Any]:
    if sys.platform != "win32":
        raise WindowsServiceUnavailable(
            "Windows services are only available on Windows; use systemd on Linux"
        )
    try:
        import servicemanager
        import win32event
        import win32service
        import win32serviceutil
    except ImportError as exc:  # pragma: no cover - Windows only
        raise WindowsServiceUnavailable("pywin32 is not installed: pip install pywin32") from exc
    return win32serviceutil, win32service, win32event, servicemanager


class StopBridge:
    """Carries a stop request from the service control thread into the daemon's event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[str], None] | None = None
        self._pending = False
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]) -> None:
        """Called by the daemon once running; replays a stop that arrived earlier."""
        with self._lock:
            self._loop, self._stop = loop, stop
            pending = self._pending
        if pending:
            loop.call_soon_threadsafe(stop, "service stop")

    def request_stop(self) -> None:
        """Called from the service control handler thread."""
        with self._lock:
            self._pending = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop, "service stop")


def run_service_main(config_file: Path | None, bridge: StopBridge) -> int:
    """Run the daemon until the bridge asks it to stop; returns the exit code."""
    # Imported here: the service-control helpers below must not load the daemon's composition.
    from agent import app

    return app.run_from_config(config_file, stop_bridge=bridge)


def _service_class() -> type:  # pragma: no cover - Windows only
    win32serviceutil, win32service, win32event, servicemanager = _win32()

    framework: Any = win32serviceutil.ServiceFramework

    class EmAgentService(framework):  # type: ignore[misc]
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = SERVICE_DISPLAY_NAME
        _svc_description_ = SERVICE_DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.bridge = StopBridge()
            self.stopped = win32event.CreateEvent(None, 0, 0, None)

        def SvcStop(self) -> None:  # noqa: N802 - pywin32 API name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=60_000)
            self.bridge.request_stop()

        def SvcDoRun(self) -> None:  # noqa: N802 - pywin32 API name
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting")
            config = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, CONFIG_REGISTRY_VALUE, None)
            code = run_service_main(Path(config) if config else None, self.bridge)
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} stopped with exit code {code}")
            win32event.SetEvent(self.stopped)

    return EmAgentService


def install(config_file: Path) -> None:  # pragma: no cover - Windows only
    """Install the service (automatic start) pointing at ``config_file``."""
    win32serviceutil, win32service, _, _ = _win32()
    cls = _service_class()
    if getattr(sys, "frozen", False):
        # PyInstaller one-file build: the executable itself is the service binary (`em-agent.exe service-host`).
        exe_name, exe_args = sys.executable, "service-host"
        class_string = f"{cls.__module__}.{cls.__name__}"
    else:
        exe_name, exe_args = None, None
        class_string = win32serviceutil.GetServiceClassString(cls)
    win32serviceutil.InstallService(
        class_string,
        SERVICE_NAME,
        SERVICE_DISPLAY_NAME,
        startType=win32service.SERVICE_AUTO_START,
        description=SERVICE_DESCRIPTION,
        exeName=exe_name,
        exeArgs=exe_args,
    )
    win32serviceutil.SetServiceCustomOption(SERVICE_NAME, CONFIG_REGISTRY_VALUE, str(config_file.resolve()))


def control(action: str) -> None:  # pragma: no cover - Windows only
    """``start``, ``stop`` or ``remove`` the installed service."""
    win32serviceutil, _, _, _ = _win32()
    if action == "start":
        win32serviceutil.StartService(SERVICE_NAME)
    elif action == "stop":
        win32serviceutil.StopService(SERVICE_NAME)
    elif action == "remove":
        win32serviceutil.RemoveService(SERVICE_NAME)
    else:
        raise ValueError(f"unknown service action {action!r}")


def host() -> None:  # pragma: no cover - Windows only
    """Entry point when the service control manager starts the frozen executable."""
    _, _, _, servicemanager = _win32()
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(_service_class())
    servicemanager.StartServiceCtrlDispatcher()
