"""The Semphony SDK surface, over the SEM simulator in process or a Semphony control server over HTTP.

Usage (as in the Semphony reference)::

    client = SemphonyClient("http://127.0.0.1:8100", api_key)   # or SemphonyClient.simulated()
    run = client.run("experiment-1")
    with run.session(guardrails=ImagingGuardrails()) as session:
        sem = ImagingDevice(client, device_slug="sem-001")
        sem.attach(session)
        sem.stage.move_to(1.0, 2.0)
        result = sem.imaging.acquire(AcquisitionConfig(fov_um=50), download=True)

The methods are synchronous, for scripts and notebooks; they wrap the asynchronous facade
(:mod:`agent.devices.microscope`) that the daemon awaits directly. The top-level ``semphony`` package offers this
surface under the reference's own names and adds what needs layers above the devices: ``imaging.autofocus``,
``imaging.save_roi``, ``imaging.find_roi`` and ``load_roi_from_fs``.
"""

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException, SemphonyUnsupportedError
from agent.devices.guardrails import ImagingGuardrails, StageSoftLimits
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.devices.semphony.client import Run, SemphonyClient, Session, run
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
    "AcquisitionConfig",
    "AcquisitionResult",
    "Centerings",
    "DeformationDevice",
    "GeometricTransformations",
    "ImagingChamber",
    "ImagingDevice",
    "ImagingGuardrails",
    "ImagingInterface",
    "ImagingStageInterface",
    "Run",
    "SemphonyApiError",
    "SemphonyClient",
    "SemphonyGuardrailException",
    "SemphonyUnsupportedError",
    "Session",
    "StageSoftLimits",
    "run",
]
