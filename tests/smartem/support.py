"""Helpers of the real-backend suite: the agent's OAuth settings for the real SmartEM, and the backend's view of a
generated session read through its own GET routes and its PostgreSQL tables.

No tests here. Reads go through the routes a SmartEM client has (``/acquisitions/{uuid}``, ``.../grids``,
``/grids/{uuid}/atlas``, ``/grids/{uuid}/gridsquares``, ``/gridsquares/{uuid}/foilholes``,
``/foilholes/{uuid}/micrographs``); what no route serves (atlas tiles, tile positions, row counts) is read from
the backend's database with the fixture's read-only SQL helper.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import httpx

from agent.ingest.identity import EntityKind, entity_uuid
from backend_client.auth import ClientCredentialsAuth
from testbed.epu import Manifest
from testbed.smartem_real import RealSmartEM
from tests.integration.test_ingest_support import REPO_ROOT, agent_env, field_problems, key_problems


def agent_oauth_env(smartem: RealSmartEM) -> dict[str, str]:
    """Settings (environment form) that point an agent at the real backend with OAuth client credentials."""
    return {
        "EM_AGENT_BACKEND__URL": smartem.base_url,
        "EM_AGENT_BACKEND__OAUTH_TOKEN_URL": smartem.oidc.token_url,
        "EM_AGENT_BACKEND__CLIENT_ID": smartem.oidc.client_id,
        "EM_AGENT_BACKEND__CLIENT_SECRET": smartem.oidc.client_secret,
    }


def reader_auth(smartem: RealSmartEM) -> httpx.Auth:
    """Auth for the test's own reads: client credentials from the stand-in (refreshed when they expire)."""
    return ClientCredentialsAuth(smartem.oidc.token_url, smartem.oidc.client_id, smartem.oidc.client_secret)


def row_counts(smartem: RealSmartEM) -> dict[str, int]:
    """Rows per entity kind in the backend's database, plus ``tile_position``."""
    counts = smartem.entity_counts()
    counts["tile_position"] = smartem.count("atlastilegridsquareposition")
    return counts


def _get(http: httpx.Client, path: str) -> Any:
    resp = http.get(path)
    resp.raise_for_status()
    return resp.json()


def _micrograph_id(row: dict[str, Any]) -> str:
    # SmartEM's micrograph has no field for EPU's id: it travels as the stem of the file paths.
    for field in ("manifest_file", "high_res_path"):
        if row.get(field):
            return PurePath(str(row[field]).replace("\\", "/")).stem
    raise AssertionError(f"micrograph {row.get('uuid')} has no path to name it by")


def manifest_problems(smartem: RealSmartEM, manifest: Manifest) -> list[str]:
    """Everything that differs between the real backend and ``manifest`` (empty list: exact match).

    Per acquisition, walking the backend's GET routes parent by parent: each expected entity present exactly once,
    under its deterministic uuid and its parent, with the key field values the files carry; nothing unexpected.
    Then the row counts of every table equal the manifest's (near-grid-bar holes filtered, as SmartEM does), so
    nothing hides outside the walked tree either.
    """
    problems: list[str] = []
    expected = manifest.natural_keys(include_near_grid_bar=False)
    observed: dict[str, Counter[tuple[str, str]]] = {kind: Counter() for kind in expected}
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}

    def seen(kind: str, acq: str, natural: str, row: dict[str, Any]) -> None:
        observed[kind][(acq, natural)] += 1
        by_key[(kind, acq, natural)] = {"uuid": row["uuid"], "data": row}
        if row["uuid"] != entity_uuid(acq, kind, natural):
            problems.append(f"{kind} {natural}: uuid {row['uuid']} is not the deterministic one")

    with httpx.Client(base_url=smartem.base_url, auth=reader_auth(smartem), timeout=30) as http:
        for acq in manifest.acquisition_keys():
            acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
            resp = http.get(f"/acquisitions/{acq_uuid}")
            if resp.status_code != 200:
                problems.append(f"acquisition {acq} missing on the backend ({resp.status_code})")
                continue
            seen("acquisition", acq, acq, resp.json())
            for grid in _get(http, f"/acquisitions/{acq_uuid}/grids"):
                seen("grid", acq, acq, grid)
                atlas = http.get(f"/grids/{grid['uuid']}/atlas")
                if atlas.status_code == 200:
                    seen("atlas", acq, str(atlas.json()["atlas_id"]), atlas.json())
                for square in _get(http, f"/grids/{grid['uuid']}/gridsquares"):
                    seen("gridsquare", acq, str(square["gridsquare_id"]), square)
                    for hole in _get(http, f"/gridsquares/{square['uuid']}/foilholes"):
                        seen("foilhole", acq, str(hole["foilhole_id"]), hole)
                        for mic in _get(http, f"/foilholes/{hole['uuid']}/micrographs"):
                            seen("micrograph", acq, _micrograph_id(mic), mic)
    # Atlas tiles have no GET route of their own: read them from the table.
    for tile_uuid, tile_id in smartem.sql("SELECT uuid, tile_id FROM atlastile"):
        acq = next(
            (a for a in manifest.acquisition_keys() if entity_uuid(a, "atlas_tile", tile_id) == tile_uuid), ""
        )
        observed["atlas_tile"][(acq, tile_id)] += 1
    for kind, keys in expected.items():
        problems.extend(key_problems(kind, keys, observed[kind]))
    counts = row_counts(smartem)
    for kind, n in manifest.expected_counts(include_near_grid_bar=False).as_dict().items():
        if counts.get(kind) != n:
            problems.append(f"table of {kind} holds {counts.get(kind)} rows, expected {n}")
    positions = sum(len(t.gridsquares) for t in manifest.atlas_tiles)
    if counts["tile_position"] != positions:
        problems.append(f"{counts['tile_position']} tile positions, expected {positions}")
    problems.extend(field_problems(manifest, by_key))
    return problems


_RECEIVED = re.compile(r"Received message: \{'event_type': '([a-z_.]+)', 'uuid': '([^']+)'")


def consumer_events(smartem: RealSmartEM) -> Counter[tuple[str, str]]:
    """(event type, entity uuid) pairs the backend's RabbitMQ consumer logged as received."""
    text = Path(smartem.consumer_log_path).read_text(errors="replace")
    return Counter(_RECEIVED.findall(text))


def wait_for_consumer(smartem: RealSmartEM, timeout_s: float = 120.0) -> None:
    """Wait until the backend's queue is drained (its consumer takes one message at a time and simulates
    processing for each micrograph, so it lags the API by seconds on a medium session)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        ready = sum(n for n, _consumers in smartem.queues().values())
        quiet = quiet + 1 if ready == 0 else 0
        if quiet >= 3:  # empty three polls in a row: the last message was taken, and logged by now
            return
        time.sleep(0.5)
    raise AssertionError(
        f"the backend's consumer did not drain its queue in {timeout_s:.0f} s: {smartem.queues()}"
    )


#: The agent id of the daemon tests.
AGENT_ID = "microscope-test-01"


@dataclass
class Daemon:
    """An ``em-agent run`` process on the real backend with one agent session."""

    smartem: RealSmartEM
    session_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def create(self, instruction_type: str, payload: Any = None) -> str:
        """Create an instruction through the backend's own endpoint; returns its id."""
        body: dict[str, Any] = {"instruction_type": instruction_type, "payload": payload or {}}
        with self.smartem.http() as http:
            resp = http.post(f"/debug/session/{self.session_id}/create-instruction", json=body)
        assert resp.status_code in (200, 201), resp.text
        instruction_id: str = resp.json()["instruction_id"]
        return instruction_id

    def ack(self, instruction_id: str, within_s: float = 60.0) -> dict[str, Any]:
        """The stored acknowledgement of ``instruction_id`` (waits for it)."""
        deadline = time.monotonic() + within_s
        query = (
            "SELECT a.status, coalesce(a.result, ''), coalesce(a.error_message, ''), i.status "
            "FROM agentinstructionacknowledgement a JOIN agentinstruction i USING (instruction_id) "
            f"WHERE a.instruction_id = '{instruction_id}'"
        )
        while True:
            rows = self.smartem.sql(query)
            if rows:
                assert len(rows) == 1, rows  # one final ack per instruction
                status, result, error, row_status = rows[0]
                return {"status": status, "result": result, "error": error, "instruction_status": row_status}
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"instruction {instruction_id} not acknowledged; agent log:\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)

    def run(self, instruction_type: str, payload: Any = None) -> dict[str, Any]:
        return self.ack(self.create(instruction_type, payload))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_daemon(smartem: RealSmartEM, tmp_path: Path) -> Iterator[Daemon]:
    """``em-agent run`` (simulated SEM, OAuth from the stand-in) on a fresh agent session of the real backend."""
    acq = "5b0d7a3e-8f1c-4a7e-9d2b-6c4e1f0a9b11"
    with smartem.http() as http:
        assert http.post("/acquisitions", json={"uuid": acq, "name": "instructions"}).status_code == 201
        created = http.post(
            "/debug/sessions/create", json={"agent_id": AGENT_ID, "acquisition_uuid": acq, "name": "tests"}
        )
    assert created.status_code in (200, 201), created.text
    session_id = created.json()["session_id"]
    watch = tmp_path / "epu"
    watch.mkdir()
    env = agent_env(agent_oauth_env(smartem))
    env.update(
        EM_AGENT_STATE_DIR=str(tmp_path / "state"),
        EM_AGENT_DEVICE__SIMULATOR_TIME_FACTOR="0",
        EM_AGENT_BACKEND__HEARTBEAT_INTERVAL_S="5",
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "agent.cli", "run", "--backend", smartem.base_url, "--watch", str(watch),
        "--agent-id", AGENT_ID, "--session-id", session_id, "--device", "simulator",
    ]  # fmt: skip
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log_file:  # a file, not a pipe: a full pipe would block the agent
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
    daemon = Daemon(smartem, session_id, proc, log_path)
    try:
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = [
    "AGENT_ID",
    "Daemon",
    "agent_oauth_env",
    "consumer_events",
    "manifest_problems",
    "reader_auth",
    "row_counts",
    "running_daemon",
    "wait_for_consumer",
]
