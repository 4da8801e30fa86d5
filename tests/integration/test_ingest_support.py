"""Shared helpers of the ingest integration tests: the backend's view of a manifest, and agent subprocesses.

No tests here; the ``test_ingest_*.py`` modules import these helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import httpx

from agent.ingest.identity import EntityKind, entity_uuid
from converters.requests import naive_utc
from testbed.epu import Manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _natural_id(kind: str, acq: str, data: dict[str, Any]) -> str:
    match kind:
        case "acquisition" | "grid":
            return acq
        case "atlas":
            return str(data["atlas_id"])
        case "atlas_tile":
            return str(data["tile_id"])
        case "gridsquare":
            return str(data["gridsquare_id"])
        case "foilhole":
            return str(data["foilhole_id"])
        case "micrograph":
            return PurePath(str(data["manifest_file"])).stem
    raise AssertionError(kind)


def backend_problems(url: str, manifest: Manifest, *, include_near_grid_bar: bool = False) -> list[str]:
    """Everything that differs between the backend and the manifest (empty list: exact match).

    Checks, per acquisition: every expected natural key present exactly once, nothing unexpected, each
    entity under its deterministic uuid, and the key field values the agent derives from the files.
    """
    problems: list[str] = []
    expected = manifest.natural_keys(include_near_grid_bar=include_near_grid_bar)
    observed: dict[str, Counter[tuple[str, str]]] = {kind: Counter() for kind in expected}
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    positions = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        counts = http.get("/testbed/counts").json()
        for acq in manifest.acquisition_keys():
            acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
            resp = http.get(f"/testbed/acquisitions/{acq_uuid}/entities")
            if resp.status_code != 200:
                problems.append(f"acquisition {acq} missing on the backend ({resp.status_code})")
                continue
            tree = resp.json()
            positions += len(tree["tile_positions"])
            for kind, rows in tree["entities"].items():
                for row in rows:
                    natural = _natural_id(kind, acq, row["data"])
                    observed[kind][(acq, natural)] += 1
                    by_key[(kind, acq, natural)] = row
                    if row["uuid"] != entity_uuid(acq, kind, natural):
                        problems.append(f"{kind} {natural}: uuid {row['uuid']} is not the deterministic one")
    for kind, keys in expected.items():
        problems.extend(key_problems(kind, keys, observed[kind]))
        if counts.get(kind) != len(keys):
            problems.append(f"backend count of {kind} is {counts.get(kind)}, expected {len(keys)}")
    expected_positions = sum(len(t.gridsquares) for t in manifest.atlas_tiles)
    if positions != expected_positions:
        problems.append(f"{positions} tile positions, expected {expected_positions}")
    problems.extend(field_problems(manifest, by_key))
    return problems


def _check(problems: list[str], what: str, observed: Any, expected: Any, tol: float = 1e-9) -> None:
    if isinstance(expected, float) and isinstance(observed, int | float):
        if abs(observed - expected) <= tol * max(1.0, abs(expected)):
            return
    elif observed == expected:
        return
    if len(problems) < 50:
        problems.append(f"{what}: expected {expected!r}, observed {observed!r}")


def key_problems(kind: str, expected: set[tuple[str, str]], observed: Counter[tuple[str, str]]) -> list[str]:
    """What is missing, unexpected or duplicated among the ``(acquisition, natural id)`` keys of one kind."""
    problems: list[str] = []
    missing = expected - set(observed)
    extra = set(observed) - expected
    dupes = [k for k, n in observed.items() if n > 1]
    if missing:
        problems.append(f"missing {kind} ({len(missing)}): {sorted(missing)[:3]}")
    if extra:
        problems.append(f"unexpected {kind} ({len(extra)}): {sorted(extra)[:3]}")
    if dupes:
        problems.append(f"duplicated {kind}: {dupes[:3]}")
    return problems


def field_problems(manifest: Manifest, by_key: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for a in manifest.acquisitions:
        row = by_key.get(("acquisition", a.acquisition_key, a.acquisition_key))
        if row:
            _check(problems, f"acquisition {a.acquisition_key} name", row["data"].get("name"), a.name)
    for s in manifest.gridsquares:
        row = by_key.get(("gridsquare", s.acquisition_key, s.gridsquare_id))
        if not row:
            continue
        d = row["data"]
        what = f"gridsquare {s.gridsquare_id}"
        _check(problems, f"{what} center_x", d.get("center_x"), round(s.center_x))
        _check(problems, f"{what} size_width", d.get("size_width"), round(s.size_width))
        _check(problems, f"{what} state", d.get("state"), s.state)
        _check(problems, f"{what} stage_position_x", d.get("stage_position_x"), s.stage_position_x)
        if s.imaged:
            _check(problems, f"{what} defocus", d.get("defocus"), s.defocus)
            _check(problems, f"{what} magnification", d.get("magnification"), s.magnification)
            _check(problems, f"{what} pixel_size", d.get("pixel_size"), s.pixel_size)
    for h in manifest.foilholes:
        row = by_key.get(("foilhole", h.acquisition_key, h.foilhole_id))
        if not row:
            continue
        d = row["data"]
        what = f"foilhole {h.foilhole_id}"
        _check(problems, f"{what} x_location", d.get("x_location"), round(h.center_x))
        _check(problems, f"{what} y_location", d.get("y_location"), round(h.center_y))
        _check(problems, f"{what} diameter", d.get("diameter"), round(h.size_width))
        _check(problems, f"{what} is_near_grid_bar", d.get("is_near_grid_bar"), h.is_near_grid_bar)
        if h.imaged and h.found_center_x is not None:
            # The newest of the two foil-hole images wins, whatever the arrival order.
            _check(problems, f"{what} center_x", d.get("center_x"), h.found_center_x)
            _check(problems, f"{what} center_y", d.get("center_y"), h.found_center_y)
    for m in manifest.micrographs:
        row = by_key.get(("micrograph", m.acquisition_key, m.micrograph_id))
        if not row:
            continue
        d = row["data"]
        what = f"micrograph {m.micrograph_id}"
        _check(problems, f"{what} defocus", d.get("defocus"), m.defocus)
        _check(problems, f"{what} image_size_x", d.get("image_size_x"), m.image_size_x)
        _check(
            problems,
            f"{what} foilhole_uuid",
            d.get("foilhole_uuid"),
            entity_uuid(m.acquisition_key, EntityKind.FOILHOLE, m.foilhole_id),
        )
        _check(
            problems,
            f"{what} acquisition_datetime",
            d.get("acquisition_datetime")[:19] if d.get("acquisition_datetime") else None,
            # On the wire every datetime is naive UTC (SmartEM's columns have no time zone).
            naive_utc(m.acquisition_datetime).isoformat()[:19],
        )
    return problems


def agent_command(watch: Path, backend_url: str, state_dir: Path, *extra: str) -> list[str]:
    """The ``em-agent ingest`` command line (``python -m agent.cli ingest``) for a subprocess agent."""
    return [
        sys.executable, "-m", "agent.cli", "ingest", str(watch), "--backend", backend_url,
        "--state-dir", str(state_dir), "--settle-time", "0.1", "--no-progress", *extra,
    ]  # fmt: skip


def agent_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of an agent subprocess: no inherited EM_AGENT_* configuration, then ``extra`` (for example
    the OAuth settings of a real backend)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra or {})
    return env


def run_agent_once(
    watch: Path,
    backend_url: str,
    state_dir: Path,
    timeout: float = 120,
    *,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``ingest --once`` to completion; returns its stdout, raises with its output on failure. ``env`` adds
    settings to the agent's environment."""
    started = time.monotonic()
    proc = subprocess.run(
        agent_command(watch, backend_url, state_dir, "--once", "--json", "--quiet-time", "3"),
        capture_output=True, text=True, timeout=timeout, env=agent_env(env), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            f"agent exited {proc.returncode} after {time.monotonic() - started:.1f}s\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
        )
    return proc.stdout
