"""Run the real SmartEM backend (``smartem-decisions``) on loopback, for tests and benchmarks.

:class:`RealSmartEM` brings up, in order: an :class:`~testbed.smartem_real.oidc.OidcStandIn` for Keycloak; a
PostgreSQL role and database and a RabbitMQ vhost and user of its own (unique names); the package's alembic
migrations (with a small alembic config written here, since the wheel ships none); the API server (uvicorn) and
the RabbitMQ consumer, both as subprocesses of the tool venv's Python 3.12. ``stop`` ends exactly the two
processes it started and drops exactly the role, database, vhost and user it created.

Every backend setting is passed explicitly in the environment: the backend reads a ``.env`` file for anything
unset, and each process writes ``smartem_backend-core.log`` into its working folder, which is therefore a folder
of the supervisor's ``workdir``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from testbed.smartem_real.oidc import OidcStandIn
from testbed.smartem_real.services import (
    PostgresAdmin,
    RabbitAdmin,
    ServiceUnavailableError,
    free_port,
    psql_rows,
)

__all__ = ["ENTITY_TABLES", "SCHEMA_ALIGNMENTS", "RealSmartEM", "children_first"]

# Upstream quirk (smartem-reference.md, "Running the real backend locally"): after `alembic upgrade head` the
# two instruction_id columns are `uuid` while the models bind `varchar`, so every instruction insert fails with
# 500 whatever the client sends. No client can work around a column type; the fixture aligns the two columns
# with what the models would create. The foreign key between them has to be dropped for the type change and is
# recreated as it was.
SCHEMA_ALIGNMENTS: tuple[str, ...] = (
    "ALTER TABLE agentinstructionacknowledgement "
    "DROP CONSTRAINT IF EXISTS agentinstructionacknowledgement_instruction_id_fkey",
    "ALTER TABLE agentinstruction ALTER COLUMN instruction_id TYPE varchar USING instruction_id::text",
    "ALTER TABLE agentinstructionacknowledgement ALTER COLUMN instruction_id TYPE varchar USING instruction_id::text",
    "ALTER TABLE agentinstructionacknowledgement ADD CONSTRAINT agentinstructionacknowledgement_instruction_id_fkey "
    "FOREIGN KEY (instruction_id) REFERENCES agentinstruction (instruction_id) ON DELETE CASCADE",
    # Upstream quirk: `POST /gridsquares/{uuid}/registered` sets the square's status to REGISTERED, a label the
    # migrations never add to the enum gridsquarestatus (NONE, FOIL_HOLES_DECISION_STARTED/_COMPLETED), so the
    # route fails with 500 on every existing square. The label is added as the model declares it.
    "ALTER TYPE gridsquarestatus ADD VALUE IF NOT EXISTS 'REGISTERED'",
)

_ALEMBIC_INI = """\
[alembic]
script_location = {script_location}
sqlalchemy.url = {url}

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)s %(name)s %(message)s
"""


#: Entity kind (as em-agent and the testbed's manifests name it) -> the real backend's table.
ENTITY_TABLES: dict[str, str] = {
    "acquisition": "acquisition",
    "grid": "grid",
    "atlas": "atlas",
    "atlas_tile": "atlastile",
    "gridsquare": "gridsquare",
    "foilhole": "foilhole",
    "micrograph": "micrograph",
}


class RealSmartEM:
    """The real SmartEM backend on 127.0.0.1, with everything it needs created privately and removed after.

    Args:
        tool_bin: ``bin`` folder of the Python 3.12 venv holding ``smartem-decisions[backend,images]``
            (:func:`testbed.toolenv.ensure_tool_venv`).
        workdir: a folder for logs, the alembic config and the processes' working folders.
        token_lifetime_s: lifetime of the OIDC stand-in's tokens (changeable later on ``oidc``).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, tool_bin: Path, workdir: Path, *, token_lifetime_s: float = 300.0) -> None:
        self.tool_bin = Path(tool_bin).absolute()
        self.workdir = Path(workdir).absolute()
        self.oidc = OidcStandIn(token_lifetime_s=token_lifetime_s)
        suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
        # One unique name for the role, database, vhost and user: they are ours alone, so dropping them is safe.
        self.name = f"emagent_smartem_{suffix}"
        self._db_password = secrets.token_hex(12)
        self._mq_password = secrets.token_hex(12)
        self.pg = PostgresAdmin()
        self.mq = RabbitAdmin()
        self.port = 0
        self._api: subprocess.Popen[bytes] | None = None
        self._consumer: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self._created_db = False
        self._created_mq = False
        self._seeded_tables: frozenset[str] = frozenset()
        self._data_tables: tuple[str, ...] = ()
        self._delete_order: tuple[str, ...] = ()
        self._sequences: tuple[str, ...] = ()
        self.api_log_path = self.workdir / "api.log"
        self.consumer_log_path = self.workdir / "consumer.log"
        self.migration_log_path = self.workdir / "alembic.log"

    # -- public view -------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the API server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> str:
        """Name of the private PostgreSQL database."""
        return self.name

    @property
    def vhost(self) -> str:
        """Name of the private RabbitMQ vhost."""
        return self.name

    def token(self) -> str:
        """A fresh access token from the stand-in (for a test's own reads of the API)."""
        return self.oidc.issue_token()

    def http(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on the API with a valid bearer token (for reading the backend's GET endpoints)."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs
        )

    def sql(self, query: str) -> list[tuple[str, ...]]:
        """Rows of a read-only query on the backend's database (values as strings, NULL as ``''``)."""
        return psql_rows(
            query,
            host=self.pg.host,
            port=self.pg.port,
            user=self.name,
            password=self._db_password,
            database=self.name,
            read_only=True,
        )

    def count(self, table: str) -> int:
        """Rows in ``table`` of the backend's database."""
        return int(self.sql(f'SELECT count(*) FROM "{table}"')[0][0])

    def entity_counts(self) -> dict[str, int]:
        """Rows per entity kind (:data:`ENTITY_TABLES`), in one query: it is polled while agents run, and every
        ``psql`` process takes CPU from them."""
        counts = ", ".join(f'(SELECT count(*) FROM "{table}")' for table in ENTITY_TABLES.values())
        row = self.sql(f"SELECT {counts}")[0]
        return {kind: int(n) for kind, n in zip(ENTITY_TABLES, row, strict=True)}

    def reset_data(self) -> None:
        """Empty every table the backend fills at run time, so tests do not see each other's rows.

        Tables the migrations seeded (and ``alembic_version``) are kept.
        """
        if not self._data_tables:
            return
        # The consumer may still be working through the previous test's events (it reads and writes these tables):
        # let it drain first.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and any(ready for ready, _ in self.queues().values()):
            time.sleep(0.5)
        # DELETE, not TRUNCATE: TRUNCATE needs an exclusive lock on every table at once and deadlocked in CI against
        # the API's open transactions (an instruction stream reads while it waits). DELETE takes row locks only, so it
        # waits for a writer at worst. Children go before their parents so no foreign key is violated on the way.
        statements = [f'DELETE FROM "{t}"' for t in self._delete_order]
        # setval is not transactional and takes no table lock: ids start from 1 again, as after a fresh migration.
        statements += [f"SELECT setval('{seq}', 1, false)" for seq in self._sequences]
        for attempt in range(10):
            try:
                self._write_sql("SET lock_timeout = '20s'; BEGIN; " + "; ".join(statements) + "; COMMIT")
                return
            except ServiceUnavailableError as exc:
                if "deadlock detected" not in str(exc) or attempt == 9:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def queues(self) -> dict[str, tuple[int, int]]:
        """The private vhost's queues: name -> (ready messages, consumers)."""
        return self.mq.queue_consumers(self.vhost)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> RealSmartEM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout_s: float = 120.0) -> None:
        """Create the private resources, migrate, start the API and the consumer, wait until both are ready.

        Raises :class:`ServiceUnavailableError` (with the relevant log tail) when any step fails; whatever was
        created by then is removed again.
        """
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("api", "consumer", "alembic", "image_cache"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.pg.check()
        self.mq.check()
        self.oidc.start()
        self._created_db = True
        self.pg.create(self.name, self._db_password, self.name)
        self._created_mq = True
        self.mq.create(self.vhost, self.name, self._mq_password)
        self._migrate()
        self.port = free_port()
        self.start_api(timeout_s=timeout_s)
        self._start_consumer(timeout_s=timeout_s)

    def stop(self) -> None:
        """Stop the processes this object started, drop what it created, stop the stand-in. Idempotent."""
        errors: list[str] = []
        self._terminate(self._consumer)
        self._consumer = None
        self.stop_api()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._created_db:
            try:
                self.pg.drop(self.name, self.name)
                self._created_db = False
            except ServiceUnavailableError as exc:
                errors.append(str(exc))
        if self._created_mq:
            try:
                self.mq.drop(self.vhost, self.name)
                self._created_mq = False
            except ServiceUnavailableError as exc:
                errors.append(str(exc))
        self.oidc.stop()
        if errors:
            raise ServiceUnavailableError("cleanup incomplete: " + "; ".join(errors))

    def start_api(self, *, timeout_s: float = 60.0) -> None:
        """Start the API server (uvicorn) on :attr:`port` and wait until ``/health`` says ok."""
        if self._api is not None and self._api.poll() is None:
            return
        cmd = [
            str(self.tool_bin / "uvicorn"), "smartem_backend.api_server:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info",
        ]  # fmt: skip
        self._api = self._spawn(cmd, self.workdir / "api", self.api_log_path)
        self._wait(self._api, self.api_log_path, self._api_healthy, timeout_s, "API server")

    def stop_api(self) -> None:
        """Stop the API server (SIGTERM, then SIGKILL after 15 s)."""
        self._terminate(self._api)
        self._api = None

    def restart_api(self, *, timeout_s: float = 60.0) -> None:
        """Stop the API server and start it again on the same port."""
        self.stop_api()
        self.start_api(timeout_s=timeout_s)

    @property
    def api_pid(self) -> int | None:
        """Process id of the running API server (None when stopped)."""
        return self._api.pid if self._api is not None and self._api.poll() is None else None

    # -- internals ---------------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        return {
            **keep,
            "POSTGRES_HOST": self.pg.host,
            "POSTGRES_PORT": str(self.pg.port),
            "POSTGRES_DB": self.name,
            "POSTGRES_USER": self.name,
            "POSTGRES_PASSWORD": self._db_password,
            "RABBITMQ_HOST": self.mq.host,
            "RABBITMQ_PORT": str(self.mq.port),
            "RABBITMQ_USER": self.name,
            "RABBITMQ_PASSWORD": self._mq_password,
            "RABBITMQ_VHOST": self.vhost,
            "KEYCLOAK_URL": self.oidc.base_url,
            "KEYCLOAK_REALM": self.oidc.realm,
            "KEYCLOAK_ALLOWED_AZP": self.oidc.client_id,
            "KEYCLOAK_VERIFY_ISS": "true",
            "HTTP_API_HOST": "127.0.0.1",
            "HTTP_API_PORT": str(self.port),
            "SMARTEM_LOG_LEVEL": "INFO",
            "SMARTEM_IMAGE_CACHE_DIR": str(self.workdir / "image_cache"),
            "PYTHONUNBUFFERED": "1",
        }

    def _sync_url(self) -> str:
        return (
            f"postgresql+psycopg2://{self.name}:{self._db_password}@{self.pg.host}:{self.pg.port}/{self.name}"
        )

    def _write_sql(self, sql: str) -> list[tuple[str, ...]]:
        return psql_rows(
            sql,
            host=self.pg.host,
            port=self.pg.port,
            user=self.name,
            password=self._db_password,
            database=self.name,
        )

    def _migrate(self) -> None:
        locate = subprocess.run(
            [str(self.tool_bin / "python"), "-c", "import smartem_backend, os; print(os.path.dirname(smartem_backend.__file__))"],
            capture_output=True, text=True, env=self._env(), timeout=60, check=False,
        )  # fmt: skip
        if locate.returncode != 0:
            raise ServiceUnavailableError(
                f"smartem_backend is not importable in {self.tool_bin}: {locate.stderr[-800:]}"
            )
        migrations = Path(locate.stdout.strip()) / "migrations"
        ini = self.workdir / "alembic" / "alembic.ini"
        # ConfigParser interpolates '%': the URL holds none (hex password) but escape anyway.
        ini.write_text(
            _ALEMBIC_INI.format(script_location=migrations, url=self._sync_url().replace("%", "%%"))
        )
        with self.migration_log_path.open("wb") as log:
            run = subprocess.run(
                [str(self.tool_bin / "alembic"), "-c", str(ini), "upgrade", "head"],
                stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.workdir / "alembic",
                timeout=300, check=False,
            )  # fmt: skip
        if run.returncode != 0:
            raise ServiceUnavailableError(f"alembic upgrade head failed:\n{_tail(self.migration_log_path)}")
        self._write_sql("BEGIN; " + "; ".join(SCHEMA_ALIGNMENTS) + "; COMMIT")
        tables = [
            r[0] for r in self._write_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        seeded = {
            t
            for t in tables
            if t == "alembic_version" or int(self._write_sql(f'SELECT count(*) FROM "{t}"')[0][0]) > 0
        }
        self._seeded_tables = frozenset(seeded)
        self._data_tables = tuple(sorted(t for t in tables if t not in seeded))
        references = self._write_sql(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        )
        self._delete_order = children_first(
            self._data_tables, [(r[0].strip('"'), r[1].strip('"')) for r in references]
        )
        self._sequences = tuple(
            r[0]
            for r in self._write_sql(
                "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
            )
        )

    def _spawn(self, cmd: list[str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
        log = log_path.open("ab")
        self._logs.append(log)
        log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd, cwd=cwd, env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _api_healthy(self) -> bool:
        try:
            resp = httpx.get(f"{self.base_url}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.json().get("status") == "ok"

    def _consumer_ready(self) -> bool:
        queue = self.queues().get("smartem_backend")
        return queue is not None and queue[1] >= 1

    def _start_consumer(self, *, timeout_s: float) -> None:
        cmd = [str(self.tool_bin / "python"), "-m", "smartem_backend.consumer", "-v"]
        self._consumer = self._spawn(cmd, self.workdir / "consumer", self.consumer_log_path)
        self._wait(self._consumer, self.consumer_log_path, self._consumer_ready, timeout_s, "consumer")

    def _wait(
        self, proc: subprocess.Popen[bytes], log: Path, ready: Any, timeout_s: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceUnavailableError(f"SmartEM {what} exited ({proc.returncode}):\n{_tail(log)}")
            if ready():
                return
            time.sleep(0.25)
        raise ServiceUnavailableError(f"SmartEM {what} not ready after {timeout_s:.0f} s:\n{_tail(log)}")

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return f"(no log at {path})"


def children_first(tables: Sequence[str], references: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """``tables`` ordered so that each table comes before every table it references (a safe order to delete in).

    ``references`` holds ``(referencing, referenced)`` pairs; a self-reference is ignored, because one ``DELETE`` of
    every row checks it only at the end of the statement. Raises ``ValueError`` on a cycle between tables.
    """
    wanted = set(tables)
    # referenced -> tables that point at it; a referenced table may go only when all of those are gone.
    pointers: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in references:
        if child != parent and child in wanted and parent in wanted:
            pointers[parent].add(child)
    order: list[str] = []
    remaining = sorted(wanted)
    while remaining:
        ready = [t for t in remaining if not (pointers[t] - set(order))]
        if not ready:
            raise ValueError(f"foreign keys form a cycle among {remaining}")
        order.extend(ready)
        remaining = [t for t in remaining if t not in ready]
    return tuple(order)
