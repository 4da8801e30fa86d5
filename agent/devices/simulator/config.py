"""The simulator's configuration model, defined beside the factory in :mod:`agent.devices.simulator_config` (so
that settings can hold it without loading the simulator) and importable here too."""

from agent.devices.simulator_config import SimulatorConfig

__all__ = ["SimulatorConfig"]
