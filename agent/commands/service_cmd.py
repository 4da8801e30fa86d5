"""``em-agent service``: install and control the agent as a system service.

Linux: ``service install --systemd`` writes the unit (Type=notify, watchdog, hardening) and an environment-file
template; then use ``systemctl``. Windows: ``service install|start|stop|remove`` manage a Windows service (pywin32).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from agent.service import systemd, windows


def _install(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else None
    if args.systemd or sys.platform != "win32":
        exe = args.executable or shutil.which("em-agent") or sys.argv[0]
        try:
            written = systemd.install_unit(
                executable=str(Path(exe).resolve()),
                config_file=config or Path("/etc/em-agent/config.toml"),
                unit_dir=Path(args.unit_dir),
                env_file=Path(args.env_file),
                overwrite=args.force,
            )
        except (OSError, FileExistsError) as exc:
            print(f"em-agent: cannot install the unit: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        print("next: systemctl daemon-reload && systemctl enable --now em-agent; journalctl -u em-agent -f")
        return 0
    if config is None:
        print("em-agent: --config is required for the Windows service", file=sys.stderr)
        return 2
    try:
        windows.install(config)
    except windows.WindowsServiceUnavailable as exc:
        print(f"em-agent: {exc}", file=sys.stderr)
        return 1
    print(f"installed Windows service {windows.SERVICE_NAME}; start it with: em-agent service start")
    return 0


def _control(args: argparse.Namespace) -> int:
    if sys.platform != "win32":
        print(f"em-agent: on Linux use: systemctl {args.service_action} em-agent", file=sys.stderr)
        return 2
    try:
        windows.control(args.service_action)
    except windows.WindowsServiceUnavailable as exc:
        print(f"em-agent: {exc}", file=sys.stderr)
        return 1
    return 0


def _host(args: argparse.Namespace) -> int:  # pragma: no cover - Windows only
    windows.host()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``service install|start|stop|remove`` (and the hidden ``service-host``)."""
    parser = subparsers.add_parser("service", help="install and control the agent as a system service")
    sub = parser.add_subparsers(dest="service_action", metavar="ACTION", required=True)
    install = sub.add_parser("install", help="install the service (systemd unit on Linux, Windows service)")
    install.add_argument("--systemd", action="store_true", help="write a systemd unit (default on Linux)")
    install.add_argument("--config", help="configuration file the service will use")
    install.add_argument("--executable", help="path of the em-agent executable (default: the one on PATH)")
    install.add_argument("--unit-dir", default="/etc/systemd/system", help="where to write em-agent.service")
    install.add_argument("--env-file", default="/etc/em-agent/em-agent.env", help="environment file template")
    install.add_argument("--force", action="store_true", help="overwrite an existing unit")
    install.set_defaults(func=_install)
    for action in ("start", "stop", "remove"):
        sub.add_parser(action, help=f"{action} the Windows service").set_defaults(func=_control)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        subparsers.add_parser("service-host", help=argparse.SUPPRESS).set_defaults(func=_host)
