"""``semphony.models``: configuration and result models and ``load_roi_from_fs`` (re-exported from
:mod:`agent.devices.semphony.models`)."""

from agent.devices.semphony.models import (
    AcquisitionConfig,
    AcquisitionResult,
    AutofocusConfig,
    AutofocusResult,
    FindRoiResult,
    ImagingGuardrails,
    RoiSpec,
    StageSoftLimits,
    load_roi_from_fs,
)

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
