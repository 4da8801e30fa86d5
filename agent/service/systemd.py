"""systemd integration: ``sd_notify`` messages (READY, STATUS, WATCHDOG, STOPPING) and unit installation.

The notify protocol is one datagram per message to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading
``@`` means the abstract namespace). Implemented here instead of depending on libsystemd so that it works the same
in a virtualenv and under PyInstaller, and so tests can run it against a fake socket.
"""

from __future__ import annotations

import logging
import os
import socket
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends ``sd_notify`` messages when running under systemd with ``Type=notify``; a no-op otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        # Ping at half the period, as systemd recommends.
        self.watchdog_interval_s: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and watchdog_for_us else None
        )

    @property
    def enabled(self) -> bool:
        """True when a notify socket was given."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one message (``KEY=VALUE`` lines); returns False if it could not be delivered."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8", "replace"))
        except OSError as exc:
            log.warning("sd_notify failed", extra={"error": str(exc)})
            return False
        return True

    def ready(self, status: str = "running") -> bool:
        """Tell systemd start-up is complete."""
        return self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> bool:
        """Update the one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        """Keep-alive ping; systemd restarts the service if these stop for ``WatchdogSec``."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Tell systemd a shutdown is in progress."""
        return self.notify("STOPPING=1")


UNIT_NAME = "em-agent.service"

ENV_TEMPLATE = """\
# Environment for em-agent.service (mode 600, owned by root). Secrets live here or in files, never in flags.
# Static bearer token, or OAuth2 client credentials:
#EM_AGENT_BACKEND__TOKEN=
#EM_AGENT_BACKEND__CLIENT_SECRET=
# Semphony control server API key (device.backend = "semphony"):
#EM_AGENT_DEVICE__API_KEY=
"""


def unit_text(executable: str, config_file: Path) -> str:
    """The packaged unit file with the executable and configuration paths filled in."""
    template = resources.files("agent.service").joinpath("em-agent.service.in").read_text(encoding="utf-8")
    return template.replace("@EXEC@", executable).replace("@CONFIG@", str(config_file))


def install_unit(
    *, executable: str, config_file: Path, unit_dir: Path, env_file: Path, overwrite: bool = False
) -> list[Path]:
    """Write the unit and an environment-file template; returns the paths written."""
    written: list[Path] = []
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / UNIT_NAME
    if unit_path.exists() and not overwrite:
        raise FileExistsError(f"{unit_path} exists; pass --force to overwrite")
    unit_path.write_text(unit_text(executable, config_file), encoding="utf-8")
    written.append(unit_path)
    if not env_file.exists():
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(ENV_TEMPLATE, encoding="utf-8")
        env_file.chmod(0o600)
        written.append(env_file)
    return written
