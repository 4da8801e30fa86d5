"""``semphony.models``: configuration and result models, and ``load_roi_from_fs``."""

from agent.autofocus.models import AutofocusConfig, AutofocusResult
from agent.devices.guardrails import ImagingGuardrails, StageSoftLimits
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.roi.models import FindRoiResult, RoiSpec
from agent.roi.storage import load_roi_from_fs

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
