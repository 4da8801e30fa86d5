"""The device layer: pluggable async backends behind one switch (the factory), the asynchronous device facade
the daemon awaits (:mod:`agent.devices.microscope`), the synchronous Semphony SDK surface over the same facade,
guardrails, the SEM simulator, the Semphony HTTP backend, the OpenFIBSEM backend, the Athena decision-service
client and image saving.

Subpackages: :mod:`agent.devices.semphony` (the SDK), :mod:`agent.devices.simulator` (the simulator),
:mod:`agent.devices.openfibsem` (OpenFIBSEM). The wire protocol: :mod:`agent.devices.semphony_protocol`.
"""

from agent.devices.athena import AthenaClient, DecisionRecord, area_id
from agent.devices.backend import DeviceBackend
from agent.devices.capabilities import ACTION_CAPABILITIES, Capability
from agent.devices.connection import ImagingConnection
from agent.devices.errors import (
    AthenaError,
    SemphonyApiError,
    SemphonyGuardrailException,
    SemphonyUnsupportedError,
)
from agent.devices.factory import BackendKind, create_backend, create_client
from agent.devices.guardrails import DeviceState, ImagingGuardrails, StageSoftLimits, check_capability
from agent.devices.http_backend import SemphonyHttpBackend
from agent.devices.identity import InstrumentKey, instrument_key
from agent.devices.image_store import SavedImage, UnsafePathError, save_image
from agent.devices.microscope import DeviceSession, Microscope, open_microscope
from agent.devices.models import AcquisitionConfig, AcquisitionResult
from agent.devices.openfibsem import OpenFibsemBackend, OpenFibsemConfig
from agent.devices.simulator_config import SimulatorConfig

__all__ = [
    "ACTION_CAPABILITIES",
    "AcquisitionConfig",
    "AcquisitionResult",
    "AthenaClient",
    "AthenaError",
    "BackendKind",
    "Capability",
    "DecisionRecord",
    "DeviceBackend",
    "DeviceSession",
    "DeviceState",
    "ImagingConnection",
    "ImagingGuardrails",
    "InstrumentKey",
    "Microscope",
    "OpenFibsemBackend",
    "OpenFibsemConfig",
    "SavedImage",
    "SemphonyApiError",
    "SemphonyGuardrailException",
    "SemphonyHttpBackend",
    "SemphonyUnsupportedError",
    "SimulatorConfig",
    "StageSoftLimits",
    "UnsafePathError",
    "area_id",
    "check_capability",
    "create_backend",
    "create_client",
    "instrument_key",
    "open_microscope",
    "save_image",
]
