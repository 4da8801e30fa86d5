"""Who the attached instrument is: the backend kind and the identity its metrics report.

The autofocus policy keys its validation verdicts by this pair, so the key is built here, in the device layer,
where both the asynchronous facade and the synchronous SDK can offer it without importing the autofocus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["InstrumentKey", "instrument_key", "simulator_instrument_info"]


@dataclass(frozen=True)
class InstrumentKey:
    """What a verdict is about: the device backend kind and the instrument's identity."""

    backend: str
    instrument: str

    def label(self) -> str:
        """``backend: instrument`` for messages."""
        return f"{self.backend}: {self.instrument}"


def instrument_key(backend: str, metrics: Mapping[str, Any], device_slug: str | None = None) -> InstrumentKey:
    """Build the key from the backend kind and the ``instrument`` section of the device's metrics.

    A device that reports no identity is keyed by its slug, so a verdict recorded for it still names something
    the operator recognises.
    """
    info = metrics.get("instrument")
    if isinstance(info, Mapping) and (info.get("manufacturer") or info.get("model")):
        parts = [str(info.get("manufacturer") or ""), str(info.get("model") or "")]
        name = " ".join(p for p in parts if p)
        serial = info.get("serial_number")
        return InstrumentKey(backend, f"{name} (serial {serial})" if serial else name)
    return InstrumentKey(backend, f"device {device_slug or '?'} (no instrument identity reported)")


def simulator_instrument_info(stig_rotation_deg: float = 0.0) -> dict[str, str]:
    """The SEM simulator's instrument identity, as ``GetMetrics`` reports it under ``instrument``.

    The serial number names the column (its stigmator rotation): a simulated column the learned autofocus was not
    trained on is a different instrument, so a validation verdict recorded for one never applies to the other.
    Defined here rather than in the simulator so that the autofocus policy names the simulator's column without
    loading the simulator.
    """
    return {
        "library": "em-agent",
        "manufacturer": "em-agent",
        "model": "SEM simulator",
        "serial_number": f"sim-stigrot-{stig_rotation_deg:g}",
    }
