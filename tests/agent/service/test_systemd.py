"""sd_notify against a fake NOTIFY_SOCKET, the unit file (systemd-analyze verify) and its installer."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agent.process.sd_notify import SystemdNotifier
from agent.service.systemd import install_unit, unit_text
from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def notify_socket(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_status_watchdog_messages(notify_socket: tuple[Path, socket.socket]) -> None:
    path, sock = notify_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000"})
    assert n.enabled
    assert n.watchdog_interval_s == 10.0
    assert n.ready("running")
    assert sock.recv(4096) == b"READY=1\nSTATUS=running"
    assert n.status("outbox=3")
    assert sock.recv(4096) == b"STATUS=outbox=3"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_and_disabled() -> None:
    name = f"em-agent-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100).startswith(b"READY=1")
    finally:
        sock.close()
    off = SystemdNotifier({})
    assert not off.enabled
    assert not off.ready()
    assert off.watchdog_interval_s is None
    assert SystemdNotifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None


def test_deploy_unit_matches_packaged_template() -> None:
    shipped = (REPO / "deploy" / "systemd" / "em-agent.service").read_text()
    assert shipped == unit_text("/opt/em-agent/bin/em-agent", Path("/etc/em-agent/config.toml"))
    for key in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
    ):
        assert key in shipped


def test_install_writes_unit_and_private_env(tmp_path: Path) -> None:
    written = install_unit(
        executable="/opt/em-agent/bin/em-agent",
        config_file=Path("/etc/em-agent/config.toml"),
        unit_dir=tmp_path / "units",
        env_file=tmp_path / "etc" / "em-agent.env",
    )
    assert [p.name for p in written] == ["em-agent.service", "em-agent.env"]
    assert (tmp_path / "etc" / "em-agent.env").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        install_unit(
            executable="x", config_file=Path("y"), unit_dir=tmp_path / "units", env_file=tmp_path / "e"
        )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("EM_AGENT_REQUIRE_SYSTEMD", "systemd-analyze not installed")
    exe = tmp_path / "em-agent"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "em-agent.service"
    unit.write_text(unit_text(str(exe), tmp_path / "config.toml"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "em-agent.service" in line and "Documentation" not in line
    ]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not problems, problems
