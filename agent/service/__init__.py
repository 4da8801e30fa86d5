"""Service integration: systemd notifications and unit installation, and the Windows service."""

from agent.service.systemd import SystemdNotifier

__all__ = ["SystemdNotifier"]
