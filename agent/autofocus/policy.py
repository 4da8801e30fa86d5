"""Which autofocus method ``method = "auto"`` runs: the learned corrector only where it has been validated.

The shipped network was trained on images of the SEM simulator only, with the stigmator axes of the column it
simulates. Nothing says it works on another column, so ``auto`` uses it only on

* the simulator column it was trained on, with the shipped weights (built in), or
* a backend and instrument for which ``em-agent autofocus validate`` recorded a verdict, with the weights now in
  use, saying that it may be enabled.

A recorded verdict for a backend and instrument overrides the built-in one. Everywhere else ``auto`` runs the
classical sweep. An explicit ``method = "learned"`` is the operator's decision and is not second-guessed here.

Verdicts live in ``<state_dir>/autofocus/validation.json``: one entry per backend and instrument, replaced by the
next validation of the same pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.autofocus.learned import SHIPPED_WEIGHTS, torch_available
from agent.autofocus.models import AutofocusError
from agent.devices.identity import InstrumentKey, instrument_key, simulator_instrument_info

__all__ = [
    "BUILTIN_VALIDATED",
    "VALIDATION_FILE",
    "InstrumentKey",
    "MethodChoice",
    "MethodStats",
    "ValidationVerdict",
    "choose_auto_method",
    "find_verdict",
    "instrument_key",
    "load_verdicts",
    "record_verdict",
    "validation_path",
    "weights_digest",
]

_log = logging.getLogger(__name__)

#: Where verdicts are kept, relative to the state folder.
VALIDATION_FILE = Path("autofocus") / "validation.json"
_FILE_VERSION: Literal[1] = 1


#: Backend/instrument pairs the shipped network is validated for without a recorded verdict: the simulator column
#: its training images came from.
BUILTIN_VALIDATED: frozenset[InstrumentKey] = frozenset(
    {instrument_key("simulator", {"instrument": simulator_instrument_info(0.0)})}
)


class MethodStats(BaseModel):
    """One method's figures over a validation's trials."""

    model_config = ConfigDict(extra="forbid")

    trials: int
    successes: int
    success_rate: float
    # None when no trial gave the figure (every one ended with an error).
    images_median: float | None = Field(description="Median images acquired per trial.")
    time_median_s: float | None = Field(description="Median wall time per trial, s.")
    final_wd_err_um_median: float | None = Field(description="Median |final WD − reference|, µm.")
    final_stig_err_median: float | None = Field(
        description="Median max |final stigmator − reference| (units)."
    )
    errors: int = Field(description="Trials that ended with an error instead of a result.")
    first_error: str | None = None


class ValidationVerdict(BaseModel):
    """The outcome of ``em-agent autofocus validate`` for one backend and instrument."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    instrument: str
    enabled: bool = Field(description="May ``method = 'auto'`` use the learned corrector here?")
    reason: str
    weights: str = Field(description="The weights file validated.")
    weights_sha256: str = Field(description="Its digest; the verdict applies to these weights only.")
    trials: int
    seed: int
    learned: MethodStats
    classical: MethodStats
    recorded_at: str = Field(description="UTC, ISO 8601.")
    png: str | None = Field(None, description="The traces figure written with it.")

    @property
    def key(self) -> InstrumentKey:
        """The backend/instrument pair it is about."""
        return InstrumentKey(self.backend, self.instrument)


class _VerdictFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = _FILE_VERSION
    verdicts: list[ValidationVerdict] = Field(default_factory=list)


@dataclass(frozen=True)
class MethodChoice:
    """The method ``auto`` resolved to, and why (reported in the autofocus result)."""

    method: Literal["learned", "classical"]
    reason: str


def validation_path(state_dir: Path) -> Path:
    """``<state_dir>/autofocus/validation.json``."""
    return Path(state_dir) / VALIDATION_FILE


_DIGESTS: dict[tuple[Path, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def weights_digest(path: Path) -> str:
    """SHA-256 of a weights file (cached per path, size and modification time: it is read on every ``auto``)."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    cache_key = (resolved, st.st_size, st.st_mtime_ns)
    with _DIGESTS_LOCK:
        cached = _DIGESTS.get(cache_key)
    if cached is None:
        cached = hashlib.sha256(resolved.read_bytes()).hexdigest()
        with _DIGESTS_LOCK:
            _DIGESTS[cache_key] = cached
    return cached


def load_verdicts(state_dir: Path) -> list[ValidationVerdict]:
    """Every recorded verdict (none when the file does not exist); :class:`AutofocusError` if it is unreadable."""
    path = validation_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AutofocusError(f"cannot read {path}: {exc}") from exc
    try:
        return _VerdictFile.model_validate(json.loads(text)).verdicts
    except (ValueError, ValidationError) as exc:
        raise AutofocusError(f"{path} is not a validation file: {exc}") from exc


def find_verdict(state_dir: Path, key: InstrumentKey) -> ValidationVerdict | None:
    """The verdict recorded for ``key``, or None."""
    for verdict in load_verdicts(state_dir):
        if verdict.key == key:
            return verdict
    return None


def record_verdict(state_dir: Path, verdict: ValidationVerdict) -> Path:
    """Store ``verdict``, replacing the previous one for its backend and instrument; returns the file.

    The file is replaced atomically, so a reader (an agent running ``auto``) never sees half of it.
    """
    path = validation_path(state_dir)
    kept = [v for v in load_verdicts(state_dir) if v.key != verdict.key]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(_VerdictFile(verdicts=[*kept, verdict]).model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def choose_auto_method(
    key: InstrumentKey | None, state_dir: Path | None, weights_path: str | None = None
) -> MethodChoice:
    """Resolve ``method = "auto"`` for the instrument ``key`` (None: not identified)."""
    weights = Path(weights_path) if weights_path else SHIPPED_WEIGHTS
    if not torch_available():
        return MethodChoice("classical", "auto: classical (torch is not installed)")
    if not weights.is_file():
        return MethodChoice("classical", f"auto: classical (weights {weights} not found)")
    if key is None:
        return MethodChoice("classical", "auto: classical (instrument not identified, so not validated)")
    verdict: ValidationVerdict | None = None
    if state_dir is not None:
        try:
            verdict = find_verdict(state_dir, key)
        except AutofocusError as exc:
            _log.warning("autofocus: %s; the learned corrector is treated as not validated", exc)
            return MethodChoice("classical", f"auto: classical (validation file unreadable: {exc})")
    if verdict is not None:
        if verdict.weights_sha256 != weights_digest(weights):
            return MethodChoice(
                "classical",
                f"auto: classical (the verdict for {key.label()} was recorded for other weights; "
                "run `em-agent autofocus validate` again)",
            )
        figures = (
            f"learned {verdict.learned.successes}/{verdict.learned.trials}, "
            f"classical {verdict.classical.successes}/{verdict.classical.trials}"
        )
        if verdict.enabled:
            return MethodChoice(
                "learned", f"auto: learned (validated on {key.label()} {verdict.recorded_at}: {figures})"
            )
        return MethodChoice(
            "classical", f"auto: classical (not enabled on {key.label()} {verdict.recorded_at}: {figures})"
        )
    if key in BUILTIN_VALIDATED and weights.resolve() == SHIPPED_WEIGHTS.resolve():
        return MethodChoice(
            "learned", "auto: learned (the shipped network was trained on this simulator column)"
        )
    return MethodChoice(
        "classical",
        f"auto: classical (the learned corrector is not validated on {key.label()}: "
        "run `em-agent autofocus validate`)",
    )
