"""Service entry points: systemd unit installation and the Windows service."""
