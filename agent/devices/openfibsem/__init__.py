"""The ``openfibsem`` device backend: the Semphony SDK surface over OpenFIBSEM (Thermo Fisher AutoScript,
TESCAN, or OpenFIBSEM's DemoMicroscope). Needs the ``openfibsem`` extra (the ``fibsem`` package) at connection
time only; importing this package does not import OpenFIBSEM.
"""

from agent.devices.openfibsem.backend import OpenFibsemBackend, connect_microscope
from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.openfibsem.control import (
    DECLINED_CAPABILITIES,
    DECLINED_CENTERINGS,
    DECLINED_GEOMETRIES,
    DEMO_UNSUPPORTED,
    OPENFIBSEM_CAPABILITIES,
    OpenFibsemControlServer,
)

__all__ = [
    "DECLINED_CAPABILITIES",
    "DECLINED_CENTERINGS",
    "DECLINED_GEOMETRIES",
    "DEMO_UNSUPPORTED",
    "OPENFIBSEM_CAPABILITIES",
    "OpenFibsemBackend",
    "OpenFibsemConfig",
    "OpenFibsemControlServer",
    "connect_microscope",
]
