"""The testbed's fidelity, measured: the corpus of ``differential.py`` sent to the real SmartEM backend and to the
testbed in both modes.

* ``smartem`` mode must answer every step as the real backend does: the same status code, the same media type,
  the same SSE event names, and for successful JSON answers the same keys. Where it cannot, the step is listed in
  :data:`KNOWN_DIFFERENCES` with the reason; an entry that no longer differs fails too, so the list stays true.
* ``strict`` mode must refuse (4xx/5xx) every step the real backend refuses, except the compatible extensions of
  design.md listed in :data:`STRICT_EXTENSIONS` (each checked to still be accepted).

Both lists are mirrored in ``docs/testbed-fidelity.md`` (checked below).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend_client import paths
from testbed.backend import AuthOptions, BackendServer, Compat
from testbed.smartem_real import RealSmartEM
from tests.smartem.differential import CORPUS, Outcome, Request, Stream, run_corpus, status_class

REPO = Path(__file__).resolve().parents[2]
FIDELITY_DOC = REPO / "docs" / "testbed-fidelity.md"
TESTBED_TOKEN = "differential-token"


@dataclass(frozen=True)
class KnownDifference:
    """A step the testbed's ``smartem`` mode answers differently from the real backend, on purpose."""

    real: int
    testbed: int
    reason: str


KNOWN_DIFFERENCES: dict[str, KnownDifference] = {
    # Empty since the fixture adds REGISTERED to the enum gridsquarestatus (SCHEMA_ALIGNMENTS): before, the real
    # `POST /gridsquares/{uuid}/registered` failed with 500 on every existing square.
}
"""Step name -> how it differs and why. Mirrored in docs/testbed-fidelity.md."""

STRICT_EXTENSIONS: dict[str, str] = {
    "micrograph.batch": "design.md's micrograph batch extension (SmartEM has no such route: 404)",
    "ack.repeated": "design.md: idempotent repeated acks (the same final ack again is 200, not an error)",
    "ack.received_then_processed": "design.md: two-phase acks (`received`, then a final status)",
    "tile.link.repeat": "tile links are an upsert in strict mode, so a re-send after a restart is harmless",
    "acquisition.create.after_missing_name": (
        "a consequence, not a leniency: strict refused the nameless create before it, so nothing collides"
    ),
}
"""Steps the real backend refuses and strict mode accepts on purpose. Mirrored in docs/testbed-fidelity.md."""

# Service metadata, not a contract: the version and configuration blocks differ by design.
_KEYS_NOT_COMPARED = frozenset({"status", "health"})


def _media(outcome: Outcome) -> str:
    return outcome.content_type.split(";")[0].strip()


def _keys(body: str) -> set[str] | None:
    """Top-level keys of a JSON object answer (of its first element for a list); None if not comparable."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None  # a truncated long answer: not comparable
    if isinstance(data, list):
        data = data[0] if data else {}
    return set(data) if isinstance(data, dict) else None


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_outcomes(real_smartem: RealSmartEM) -> Iterator[dict[str, Outcome]]:
    """The corpus as the real backend answers it (once per module, on emptied tables)."""
    if real_smartem.api_pid is None:  # an earlier test may have left the API stopped
        real_smartem.start_api()
    real_smartem.reset_data()
    yield run_corpus(real_smartem.base_url, token=real_smartem.token())
    real_smartem.reset_data()


def _testbed_outcomes(factory: pytest.TempPathFactory, compat: Compat) -> dict[str, Outcome]:
    # Auth on, as on SmartEM, so the corpus's unauthenticated steps mean the same on both.
    auth = AuthOptions(static_tokens=(TESTBED_TOKEN,))
    with BackendServer(factory.mktemp(f"diff-{compat}") / "db.sqlite3", compat=compat, auth=auth) as server:
        return run_corpus(server.url, token=TESTBED_TOKEN)


@pytest.fixture(scope="module")
def smartem_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """The corpus as the testbed answers it in ``smartem`` mode."""
    return _testbed_outcomes(tmp_path_factory, "smartem")


@pytest.fixture(scope="module")
def strict_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """The corpus as the testbed answers it in ``strict`` mode."""
    return _testbed_outcomes(tmp_path_factory, "strict")


# -- the corpus itself (no backend needed) -------------------------------------------------------------------


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")


def test_corpus_covers_every_endpoint_the_agent_uses() -> None:
    requested = {step.path for step in CORPUS if isinstance(step, Request)}
    requested |= {
        f"/agent/{s.agent_id}/session/{s.session_id}/instructions/stream"
        for s in CORPUS
        if isinstance(s, Stream)
    }
    used_by_agent = [
        paths.STATUS, paths.ACQUISITIONS, paths.ACQUISITION, paths.ACQUISITION_GRIDS, paths.GRID,
        paths.GRID_REGISTERED, paths.GRID_ATLAS, paths.GRID_GRIDSQUARES, paths.GRID_GRIDSQUARES_BATCH,
        paths.ATLAS, paths.ATLAS_TILE_GRIDSQUARES, paths.GRIDSQUARE, paths.GRIDSQUARE_REGISTERED,
        paths.GRIDSQUARE_FOILHOLES, paths.FOILHOLE, paths.FOILHOLE_MICROGRAPHS, paths.MICROGRAPHS_BATCH,
        paths.MICROGRAPH, paths.AGENT_LOGS, paths.AGENT_HEARTBEAT, paths.AGENT_STREAM, paths.AGENT_ACK,
        paths.DEBUG_SESSIONS_CREATE, paths.DEBUG_CREATE_INSTRUCTION,
    ]  # fmt: skip
    missing = [t for t in used_by_agent if not any(_template_regex(t).match(p) for p in requested)]
    assert not missing, f"the corpus never requests {missing}"
    names = [step.name for step in CORPUS if isinstance(step, Request | Stream)]
    assert len(names) == len(set(names)), "step names must be unique"
    # Every kind of invalid request the issue names is probed on more than one endpoint.
    for probe in ("aware", "duplicate", "unknown_", "missing_", "status_unknown", "extra_field", "repeated"):
        assert sum(probe in n for n in names) >= 2, probe


def test_known_differences_are_documented() -> None:
    doc = FIDELITY_DOC.read_text(encoding="utf-8")
    undocumented = [n for n in (*KNOWN_DIFFERENCES, *STRICT_EXTENSIONS) if f"`{n}`" not in doc]
    assert not undocumented, f"list these in {FIDELITY_DOC.name}: {undocumented}"
    steps = {step.name for step in CORPUS if isinstance(step, Request | Stream)}
    assert set(KNOWN_DIFFERENCES) <= steps
    assert set(STRICT_EXTENSIONS) <= steps


# -- against the real backend --------------------------------------------------------------------------------


@pytest.mark.smartem
@pytest.mark.integration
def test_smartem_mode_answers_as_the_real_backend(
    real_outcomes: dict[str, Outcome], smartem_outcomes: dict[str, Outcome]
) -> None:
    assert real_outcomes.keys() == smartem_outcomes.keys()
    problems: list[str] = []
    for name, real in real_outcomes.items():
        testbed = smartem_outcomes[name]
        known = KNOWN_DIFFERENCES.get(name)
        if known is not None:
            if (real.status, testbed.status) != (known.real, known.testbed):
                problems.append(
                    f"{name}: listed as real {known.real} / testbed {known.testbed}, now real {real.status} / "
                    f"testbed {testbed.status}: update or remove the entry (and docs/testbed-fidelity.md)"
                )
            continue
        if real.status != testbed.status:
            kind = "class " if status_class(real.status) != status_class(testbed.status) else ""
            problems.append(
                f"{name}: {kind}real {real.status} {real.body[:120]!r} / testbed {testbed.status} "
                f"{testbed.body[:120]!r}"
            )
        elif _media(real) != _media(testbed):
            problems.append(f"{name}: real answers {_media(real)}, testbed {_media(testbed)}")
        elif real.events != testbed.events:
            problems.append(f"{name}: real events {real.events}, testbed {testbed.events}")
        elif real.status < 300 and name not in _KEYS_NOT_COMPARED:
            real_keys, testbed_keys = _keys(real.body), _keys(testbed.body)
            if real_keys is not None and testbed_keys is not None and real_keys != testbed_keys:
                problems.append(
                    f"{name}: keys only real {sorted(real_keys - testbed_keys)}, "
                    f"only testbed {sorted(testbed_keys - real_keys)}"
                )
    assert not problems, "smartem mode differs from the real backend:\n" + "\n".join(problems)


@pytest.mark.smartem
@pytest.mark.integration
def test_strict_mode_refuses_what_the_real_backend_refuses(
    real_outcomes: dict[str, Outcome], strict_outcomes: dict[str, Outcome]
) -> None:
    problems: list[str] = []
    for name, real in real_outcomes.items():
        strict = strict_outcomes[name]
        if not real.status >= 400:
            continue
        accepted = strict.status < 400
        if name in STRICT_EXTENSIONS:
            if not accepted:
                problems.append(
                    f"{name}: listed as a strict extension but refused ({strict.status}): remove it"
                )
        elif accepted:
            problems.append(
                f"{name}: real {real.status} {real.body[:120]!r}, strict accepts ({strict.status})"
            )
    stale = [n for n in STRICT_EXTENSIONS if real_outcomes[n].status < 400]
    problems.extend(f"{n}: the real backend accepts it now: remove it from STRICT_EXTENSIONS" for n in stale)
    assert not problems, "strict mode accepts what SmartEM refuses:\n" + "\n".join(problems)
