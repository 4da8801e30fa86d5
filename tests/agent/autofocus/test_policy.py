"""What ``method = "auto"`` resolves to: the learned corrector only where it is validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.autofocus.learned import SHIPPED_WEIGHTS
from agent.autofocus.policy import (
    BUILTIN_VALIDATED,
    InstrumentKey,
    MethodStats,
    ValidationVerdict,
    choose_auto_method,
    find_verdict,
    instrument_key,
    load_verdicts,
    record_verdict,
    validation_path,
    weights_digest,
)
from agent.devices.simulator.sem import instrument_info
from tests.conftest import import_optional

import_optional("torch", "EM_AGENT_REQUIRE_TORCH")  # without torch 'auto' is always classical; covered below

DEMO = InstrumentKey("openfibsem", "Demo DemoMicroscope (serial 123456)")
SIMULATOR = instrument_key("simulator", {"instrument": instrument_info(0.0)})


def stats(successes: int, trials: int = 10) -> MethodStats:
    return MethodStats(
        trials=trials,
        successes=successes,
        success_rate=successes / trials,
        images_median=6.0,
        time_median_s=1.0,
        final_wd_err_um_median=0.2,
        final_stig_err_median=0.02,
        errors=0,
    )


def verdict(key: InstrumentKey, enabled: bool, digest: str | None = None) -> ValidationVerdict:
    return ValidationVerdict(
        backend=key.backend,
        instrument=key.instrument,
        enabled=enabled,
        reason="test",
        weights=str(SHIPPED_WEIGHTS),
        weights_sha256=digest or weights_digest(SHIPPED_WEIGHTS),
        trials=10,
        seed=0,
        learned=stats(10 if enabled else 0),
        classical=stats(10),
        recorded_at="2026-01-01T00:00:00Z",
    )


def test_instrument_key_from_metrics() -> None:
    metrics = {"instrument": {"manufacturer": "Demo", "model": "DemoMicroscope", "serial_number": "123456"}}
    assert instrument_key("openfibsem", metrics, "sem-001") == DEMO
    anonymous = instrument_key("semphony", {"beam": {}}, "sem-007")
    assert anonymous == InstrumentKey("semphony", "device sem-007 (no instrument identity reported)")


def test_the_trained_simulator_column_is_built_in_and_nothing_else() -> None:
    assert SIMULATOR in BUILTIN_VALIDATED
    rotated = instrument_key("simulator", {"instrument": instrument_info(90.0)})
    over_http = InstrumentKey("semphony", SIMULATOR.instrument)
    assert rotated not in BUILTIN_VALIDATED
    assert over_http not in BUILTIN_VALIDATED


def test_auto_is_learned_on_the_simulator_and_classical_elsewhere(tmp_path: Path) -> None:
    assert choose_auto_method(SIMULATOR, tmp_path).method == "learned"
    demo = choose_auto_method(DEMO, tmp_path)
    assert demo.method == "classical"
    assert "not validated on openfibsem: Demo DemoMicroscope" in demo.reason
    assert choose_auto_method(None, tmp_path).method == "classical"


def test_auto_follows_a_recorded_verdict(tmp_path: Path) -> None:
    record_verdict(tmp_path, verdict(DEMO, enabled=True))
    choice = choose_auto_method(DEMO, tmp_path)
    assert choice.method == "learned"
    assert "learned 10/10" in choice.reason
    # A later negative verdict for the same instrument replaces it; a verdict overrides the built-in one too.
    record_verdict(tmp_path, verdict(DEMO, enabled=False))
    record_verdict(tmp_path, verdict(SIMULATOR, enabled=False))
    assert choose_auto_method(DEMO, tmp_path).method == "classical"
    assert choose_auto_method(SIMULATOR, tmp_path).method == "classical"
    assert len(load_verdicts(tmp_path)) == 2
    found = find_verdict(tmp_path, DEMO)
    assert found is not None
    assert not found.enabled


def test_a_verdict_for_other_weights_does_not_count(tmp_path: Path) -> None:
    record_verdict(tmp_path, verdict(DEMO, enabled=True, digest="0" * 64))
    choice = choose_auto_method(DEMO, tmp_path)
    assert choice.method == "classical"
    assert "other weights" in choice.reason


def test_custom_weights_are_not_built_in(tmp_path: Path) -> None:
    custom = tmp_path / "mine.pt"
    custom.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    assert choose_auto_method(SIMULATOR, tmp_path, str(custom)).method == "classical"


def test_an_unreadable_validation_file_means_classical(tmp_path: Path) -> None:
    path = validation_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    choice = choose_auto_method(SIMULATOR, tmp_path)
    assert choice.method == "classical"
    assert "unreadable" in choice.reason


def test_the_file_is_versioned_json(tmp_path: Path) -> None:
    written = record_verdict(tmp_path, verdict(DEMO, enabled=True))
    assert written == tmp_path / "autofocus" / "validation.json"
    data = json.loads(written.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert data["verdicts"][0]["instrument"] == DEMO.instrument


def test_without_torch_auto_is_classical(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("agent.autofocus.policy.torch_available", lambda: False)
    choice = choose_auto_method(SIMULATOR, tmp_path)
    assert (choice.method, choice.reason) == ("classical", "auto: classical (torch is not installed)")
