"""Config and result models of the Semphony SDK (``from agent.devices.semphony.models import ...``)."""

from __future__ import annotations

from agent.devices.guardrails import ImagingGuardrails, StageSoftLimits
from agent.devices.models import AcquisitionConfig, AcquisitionResult

__all__ = ["AcquisitionConfig", "AcquisitionResult", "ImagingGuardrails", "StageSoftLimits"]
