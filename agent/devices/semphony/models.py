"""Config and result models of the Semphony SDK (``from agent.devices.semphony.models import ...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.autofocus.models import AutofocusConfig, AutofocusResult
from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import ImagingGuardrails, StageSoftLimits
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.roi.models import FindRoiResult, RoiSpec

if TYPE_CHECKING:
    from agent.roi import SavedRoi

__all__ = [
    "AcquisitionConfig",
    "AcquisitionResult",
    "AutofocusConfig",
    "AutofocusResult",
    "FindRoiResult",
    "ImagingGuardrails",
    "RoiSpec",
    "StageSoftLimits",
    "load_roi_from_fs",
]


def load_roi_from_fs(path: str) -> SavedRoi:
    """Load a saved ROI from its directory (holding ``manifest.json``) or from the manifest itself."""
    try:
        from agent.roi import load_roi_from_fs as _load
    except ImportError as exc:
        raise SemphonyApiError(f"ROI support is not available (install em-agent[roi]): {exc}") from exc
    return _load(path)
