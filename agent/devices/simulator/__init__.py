"""The SEM simulator: instrument state and timing (``sem``), image formation (``optics``), a deformation
stage, and the Semphony control-server semantics over them (``control``)."""

from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.control import SimulatedControlServer, StoredImage
from agent.devices.simulator.deformation import DeformationSimulator
from agent.devices.simulator.sem import ActionRecord, Frame, GeometryEntry, SemSimulator, StagePosition

__all__ = [
    "ActionRecord",
    "DeformationSimulator",
    "Frame",
    "GeometryEntry",
    "SemSimulator",
    "SimulatedControlServer",
    "SimulatorConfig",
    "StagePosition",
    "StoredImage",
]
