"""The Semphony control-server semantics over the SEM simulator (:class:`SimulatedControlServer`).

Runs, sessions, attachment, guardrails, artifacts and prompts are :class:`~agent.devices.control_core.ControlCore`;
this module adds the simulated SEM and deformation stage. Two transports expose it: the in-process
:class:`~agent.devices.simulator_backend.SimulatorBackend` and the testbed's FastAPI server
(``testbed/semphony_server``), so both paths run exactly the same logic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel

from agent.devices.capabilities import Capability
from agent.devices.control_core import ControlCore, DeviceInfo, StoredImage
from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import DeviceState
from agent.devices.imageio import encode_png
from agent.devices.models import (
    AcquisitionConfig,
    BeamPayload,
    DeformationMovePayload,
    EntryRefPayload,
    EntrySetPayload,
    FocusParamsPayload,
    MoveDeltaPayload,
    MoveToPayload,
    ViewFieldPayload,
)
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.deformation import DeformationSimulator
from agent.devices.simulator.sem import SemSimulator

__all__ = ["DEFORMATION_CAPABILITIES", "IMAGING_CAPABILITIES", "SimulatedControlServer", "StoredImage"]

IMAGING_CAPABILITIES: frozenset[str] = frozenset(
    c.value for c in Capability if not c.startswith("Deformation")
)
DEFORMATION_CAPABILITIES: frozenset[str] = frozenset(
    {Capability.DEFORMATION_STATUS, Capability.DEFORMATION_MOVE}
)


class SimulatedControlServer(ControlCore):
    """A Semphony control server with one simulated SEM and one simulated deformation stage."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SimulatorConfig()
        self.sem = SemSimulator(self.config, clock=clock)
        self.deformation = DeformationSimulator(self.config)
        super().__init__(
            {
                1: DeviceInfo(1, self.config.imaging_slug, "imaging", IMAGING_CAPABILITIES),
                2: DeviceInfo(2, self.config.deformation_slug, "deformation", DEFORMATION_CAPABILITIES),
            },
            clock=clock,
            latest_position_max_age_s=self.config.latest_position_max_age_s,
            max_stored_images=self.config.max_stored_images,
            human_auto_continue=self.config.human_auto_continue,
            human_timeout_s=self.config.human_timeout_s,
        )

    async def _device_state(self) -> DeviceState:
        sem = self.sem
        pos = sem.position()
        return DeviceState(
            vacuum=sem.vacuum,
            beam_on=sem.beam_on,
            fov_um=sem.fov_um,
            x_mm=pos.x,
            y_mm=pos.y,
            z_mm=pos.z,
            r_deg=pos.r,
            t_deg=pos.t,
        )

    def _on_prompt(self, message: str) -> None:
        self.sem.record_action("AwaitHuman", {"message": message})

    async def _dispatch(self, capability_id: str, parsed: BaseModel) -> dict[str, Any]:
        sem = self.sem
        match capability_id, parsed:
            case Capability.ACQUIRE, AcquisitionConfig():
                return await self._acquire(parsed)
            case Capability.SET_VIEW_FIELD, ViewFieldPayload():
                return await sem.set_view_field(parsed.fov_um)
            case Capability.GET_FOCUS_PARAMS, _:
                return sem.focus_params()
            case Capability.SET_FOCUS_PARAMS, FocusParamsPayload():
                return await sem.set_focus_params(parsed.wd_mm, parsed.stigm_x, parsed.stigm_y)
            case Capability.SET_BEAM, BeamPayload():
                return await sem.set_beam(parsed.enabled)
            case Capability.GET_METRICS, _:
                metrics = sem.metrics()
                self._remember_position(metrics["stage"])
                return metrics
            case Capability.VENT, _:
                return await sem.vent()
            case Capability.PUMP, _:
                return await sem.pump()
            case Capability.STAGE_GET_POSITION, _:
                position = sem.position().as_dict()
                self._remember_position(position)
                return position
            case Capability.STAGE_MOVE_TO, MoveToPayload():
                moved = await sem.move_to(parsed.x, parsed.y, parsed.z, parsed.r, parsed.t)
                self._remember_position(moved.as_dict())
                return moved.as_dict()
            case Capability.STAGE_MOVE_DELTA, MoveDeltaPayload():
                moved = await sem.move_delta(parsed.dx, parsed.dy, parsed.dz, parsed.dr, parsed.dt)
                self._remember_position(moved.as_dict())
                return moved.as_dict()
            case ((Capability.GEOMETRY_LIST | Capability.CENTERING_LIST), _):
                return sem.table_list(_kind(capability_id))
            case ((Capability.GEOMETRY_SET | Capability.CENTERING_SET), EntrySetPayload()):
                return await sem.table_set(_kind(capability_id), parsed.key, parsed.x, parsed.y)
            case ((Capability.GEOMETRY_GET | Capability.CENTERING_GET), EntryRefPayload()):
                return sem.table_get(_kind(capability_id), parsed.key)
            case Capability.GEOMETRY_RESET, _:
                return await sem.geometry_reset()
            case Capability.DEFORMATION_STATUS, _:
                return self.deformation.status()
            case Capability.DEFORMATION_MOVE, DeformationMovePayload():
                return await self.deformation.move(
                    displacement_um=parsed.displacement_um, delta_um=parsed.delta_um
                )
        raise SemphonyApiError(f"unknown capability {capability_id!r}", status_code=404)

    async def _acquire(self, config: AcquisitionConfig) -> dict[str, Any]:
        frame = await self.sem.acquire(
            width=config.width,
            height=config.height,
            dwell_us=config.dwell_us,
            fov_um=config.fov_um,
            scan_rotation_deg=config.scan_rotation_deg,
        )
        self._remember_position(frame.metadata["stage"])
        levels = 255.0 if config.bit_depth == 8 else 65535.0
        quantised = np.clip(np.rint(frame.image * levels), 0, levels)
        pixels = quantised.astype(np.uint8) if config.bit_depth == 8 else quantised.astype(np.uint16)
        metadata = {
            **frame.metadata,
            "detector": config.detector,
            "bit_depth": config.bit_depth,
            "name": config.name,
        }
        metadata.pop("frame", None)
        return self._store_image(encode_png(pixels), metadata)

    # ----------------------------------------------------------------------------------- test support
    def action_counts(self) -> dict[str, int]:
        """Device actions executed so far, by capability (imaging and deformation)."""
        return dict(self.sem.counters + self.deformation.counters)


def _kind(capability_id: str) -> str:
    return "geometry" if capability_id.startswith("Geometry") else "centering"
