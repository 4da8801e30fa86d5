"""Administration of the machine's PostgreSQL and RabbitMQ for a private SmartEM backend.

Everything here acts only on names the caller passes in: :class:`PostgresAdmin` creates and drops one role and
its database, :class:`RabbitAdmin` one vhost and one user. The supervisor generates those names uniquely, so
dropping them never touches anything another test, engineer or service created.

PostgreSQL is reached with ``psql`` as an administrative role (``postgres`` by default, trust auth on loopback);
RabbitMQ with ``rabbitmqctl`` (the broker's own CLI; no management plugin is needed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "PostgresAdmin",
    "RabbitAdmin",
    "ServiceUnavailableError",
    "free_port",
    "port_open",
    "psql_rows",
]

# psql separates fields with this (a control character no value of ours contains).
_FIELD_SEP = "\x1f"


class ServiceUnavailableError(RuntimeError):
    """PostgreSQL or RabbitMQ is not there, or refused an administrative command; the message says which."""


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql_rows(
    sql: str,
    *,
    host: str,
    port: int,
    user: str,
    database: str,
    password: str | None = None,
    read_only: bool = False,
    timeout_s: float = 60.0,
) -> list[tuple[str, ...]]:
    """Run ``sql`` with ``psql`` and return its rows as tuples of strings (NULL reads as ``''``)."""
    psql = shutil.which("psql")
    if psql is None:
        raise ServiceUnavailableError("psql (the PostgreSQL client) is not installed")
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    if read_only:
        # The server refuses any write in this session: a reading helper cannot change the data by mistake.
        env["PGOPTIONS"] = "-c default_transaction_read_only=on"
    cmd = [
        psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", _FIELD_SEP,
        "-h", host, "-p", str(port), "-U", user, "-d", database, "-c", sql,
    ]  # fmt: skip
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceUnavailableError(f"psql timed out after {timeout_s:.0f} s: {sql[:200]}") from exc
    if run.returncode != 0:
        raise ServiceUnavailableError(
            f"psql failed ({run.returncode}) on {sql[:200]!r}: {run.stderr.strip()[-1000:]}"
        )
    return [tuple(line.split(_FIELD_SEP)) for line in run.stdout.splitlines() if line != ""]


class PostgresAdmin:
    """Creates and drops one login role and the database it owns."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 5432, admin_user: str | None = None) -> None:
        self.host = host
        self.port = port
        self.admin_user = admin_user or os.environ.get("EM_AGENT_PG_ADMIN", "postgres")

    def _admin(self, sql: str) -> list[tuple[str, ...]]:
        return psql_rows(sql, host=self.host, port=self.port, user=self.admin_user, database="postgres")

    def check(self) -> None:
        """Raise :class:`ServiceUnavailableError` unless PostgreSQL answers the administrative role."""
        if not port_open(self.host, self.port):
            raise ServiceUnavailableError(f"PostgreSQL is not listening on {self.host}:{self.port}")
        self._admin("SELECT 1")

    def create(self, role: str, password: str, database: str) -> None:
        """Create ``role`` (login, ``password``) and ``database`` owned by it."""
        self._admin(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        self._admin(f'CREATE DATABASE "{database}" OWNER "{role}"')

    def drop(self, role: str, database: str) -> None:
        """Drop ``database`` (closing its sessions first) and ``role``; missing ones are fine."""
        self._admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
        self._admin(f'DROP DATABASE IF EXISTS "{database}"')
        self._admin(f'DROP ROLE IF EXISTS "{role}"')


class RabbitAdmin:
    """Creates and deletes one vhost and one user with full rights on it, through ``rabbitmqctl``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.host = host
        self.port = port

    def _ctl(self, *args: str, ok_codes: Sequence[int] = (0,)) -> str:
        ctl = shutil.which("rabbitmqctl") or next(
            (p for p in ("/usr/sbin/rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl") if Path(p).exists()),
            None,
        )
        if ctl is None:
            raise ServiceUnavailableError("rabbitmqctl is not installed (needed to create a private vhost)")
        env: Mapping[str, str] = dict(os.environ)
        try:
            run = subprocess.run(
                [ctl, "-q", *args], capture_output=True, text=True, env=env, timeout=60, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceUnavailableError(f"rabbitmqctl {args[0]} timed out") from exc
        if run.returncode not in ok_codes:
            raise ServiceUnavailableError(
                f"rabbitmqctl {' '.join(args[:2])} failed ({run.returncode}): {(run.stderr or run.stdout).strip()[-800:]}"
            )
        return run.stdout

    def check(self) -> None:
        """Raise :class:`ServiceUnavailableError` unless a broker listens and ``rabbitmqctl`` can reach it."""
        if not port_open(self.host, self.port):
            raise ServiceUnavailableError(f"RabbitMQ is not listening on {self.host}:{self.port}")

    def create(self, vhost: str, user: str, password: str) -> None:
        """Create ``vhost`` and ``user`` (``password``) with configure/write/read rights on it."""
        self._ctl("add_vhost", vhost)
        self._ctl("add_user", user, password)
        self._ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def queue_consumers(self, vhost: str) -> dict[str, tuple[int, int]]:
        """Queues of ``vhost``: name -> (ready messages, consumers)."""
        out = self._ctl(
            "list_queues", "-p", vhost, "--no-table-headers", "name", "messages_ready", "consumers"
        )
        queues: dict[str, tuple[int, int]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                queues[parts[0]] = (int(parts[1]), int(parts[2]))
        return queues

    def drop(self, vhost: str, user: str) -> None:
        """Delete ``user`` and ``vhost`` (with its queues); missing ones are fine."""
        # rabbitmqctl exits 69 (EX_UNAVAILABLE) for a user or vhost that does not exist.
        self._ctl("delete_user", user, ok_codes=(0, 69))
        self._ctl("delete_vhost", vhost, ok_codes=(0, 69))
