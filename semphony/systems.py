"""``semphony.systems``: the device classes (re-exported from :mod:`agent.devices.semphony.systems`)."""

from agent.devices.semphony.systems import (
    Centerings,
    DeformationDevice,
    GeometricTransformations,
    ImagingChamber,
    ImagingDevice,
    ImagingInterface,
    ImagingStageInterface,
)

__all__ = [
    "Centerings",
    "DeformationDevice",
    "GeometricTransformations",
    "ImagingChamber",
    "ImagingDevice",
    "ImagingInterface",
    "ImagingStageInterface",
]
