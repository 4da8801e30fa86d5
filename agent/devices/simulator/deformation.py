"""A simulated deformation stage (tensile stage / load frame) with a linear-elastic specimen."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

from agent.devices.errors import SemphonyApiError
from agent.devices.simulator.config import SimulatorConfig

__all__ = ["DeformationSimulator"]


class DeformationSimulator:
    """Crosshead displacement in µm, load in N (Hooke's law), moves at a finite speed."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.displacement_um = 0.0
        self.moving = False
        self.counters: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    def status(self) -> dict[str, Any]:
        """Displacement, load and motion state."""
        return {
            "displacement_um": self.displacement_um,
            "load_n": self.displacement_um * self.config.deformation_stiffness_n_per_um,
            "moving": self.moving,
            "max_displacement_um": self.config.deformation_max_um,
        }

    async def move(self, *, displacement_um: float | None, delta_um: float | None) -> dict[str, Any]:
        """Move the crosshead to an absolute displacement or by a delta (exactly one of them)."""
        if (displacement_um is None) == (delta_um is None):
            raise SemphonyApiError("give exactly one of displacement_um and delta_um", status_code=400)
        target = displacement_um if displacement_um is not None else self.displacement_um + (delta_um or 0.0)
        if not math.isfinite(target) or not 0.0 <= target <= self.config.deformation_max_um:
            raise SemphonyApiError(
                f"displacement {target} µm outside 0..{self.config.deformation_max_um}", status_code=400
            )
        async with self._lock:
            self.counters["DeformationMove"] += 1
            self.moving = True
            try:
                delay = abs(target - self.displacement_um) / self.config.deformation_speed_um_s
                if delay * self.config.time_factor > 0:
                    await asyncio.sleep(delay * self.config.time_factor)
            finally:
                self.moving = False
            self.displacement_um = target
        return self.status()
