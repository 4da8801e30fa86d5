"""``semphony``: a compatible implementation of the Semphony Python SDK's client API, under the names its
reference uses.

Scripts written against the reference run unchanged::

    import semphony
    from semphony import SemphonyClient, Run, SemphonyGuardrailException
    from semphony.systems import ImagingDevice, DeformationDevice
    from semphony.client import SemphonyApiError
    from semphony.models import AcquisitionConfig, load_roi_from_fs

    client = SemphonyClient("https://semphony.example", api_key)
    run = semphony.run("experiment-1", client=client)

This package is the SDK surface of em-agent's device layer (:mod:`agent.devices.semphony`, synchronous wrappers
over the asynchronous facade the daemon uses), plus autofocus and ROI navigation (``semphony.systems``), which
need ``agent.autofocus`` and ``agent.roi`` above the device layer. It is not a second implementation. Beyond the reference it offers ``SemphonyClient.simulated()`` (the in-process SEM
simulator) and ``SemphonyClient.from_backend()`` (any device backend, e.g. OpenFIBSEM). Which parts of the
HTTP protocol come from the reference and which are assumed: :mod:`agent.devices.semphony_protocol` and
``docs/semphony-protocol.md``.
"""

from agent.devices.semphony import (
    AcquisitionConfig,
    AcquisitionResult,
    ImagingGuardrails,
    Run,
    SemphonyApiError,
    SemphonyClient,
    SemphonyGuardrailException,
    SemphonyUnsupportedError,
    Session,
    StageSoftLimits,
    run,
)
from semphony.models import load_roi_from_fs
from semphony.systems import (
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
    "load_roi_from_fs",
    "run",
]
