"""``sd_notify`` messages to systemd (READY, STATUS, WATCHDOG, STOPPING).

The notify protocol is one datagram per message to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading
``@`` means the abstract namespace). Implemented here instead of depending on libsystemd so that it works the same
in a virtualenv and under PyInstaller, and so tests can run it against a fake socket. Unit installation is in
:mod:`agent.service.systemd`.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("agent.service.systemd")


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
