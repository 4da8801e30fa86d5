"""Capability ids: the names of the commands a Semphony control server dispatches to an attached device.

They travel in the URL ``/api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}``. The Semphony SDK
reference names one of them (``SetViewField``); the others follow the same PascalCase convention.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTION_CAPABILITIES", "Capability"]


class Capability(StrEnum):
    """Every capability the device layer invokes."""

    ACQUIRE = "Acquire"
    SET_VIEW_FIELD = "SetViewField"
    GET_FOCUS_PARAMS = "GetFocusParams"
    SET_FOCUS_PARAMS = "SetFocusParams"
    SET_BEAM = "SetBeam"
    GET_METRICS = "GetMetrics"
    VENT = "Vent"
    PUMP = "Pump"
    STAGE_GET_POSITION = "StageGetPosition"
    STAGE_GET_LATEST_POSITION = "StageGetLatestPosition"
    STAGE_MOVE_TO = "StageMoveTo"
    STAGE_MOVE_DELTA = "StageMoveDelta"
    GEOMETRY_LIST = "GeometryList"
    GEOMETRY_GET = "GeometryGet"
    GEOMETRY_SET = "GeometrySet"
    GEOMETRY_RESET = "GeometryReset"
    CENTERING_LIST = "CenteringList"
    CENTERING_GET = "CenteringGet"
    CENTERING_SET = "CenteringSet"
    AWAIT_HUMAN = "AwaitHuman"
    # Deformation stage (tensile stage / load frame).
    DEFORMATION_STATUS = "DeformationStatus"
    DEFORMATION_MOVE = "DeformationMove"


#: Capabilities that change the instrument's state (counted as device actions; never repeated on redelivery).
ACTION_CAPABILITIES: frozenset[str] = frozenset(
    {
        Capability.ACQUIRE,
        Capability.SET_VIEW_FIELD,
        Capability.SET_FOCUS_PARAMS,
        Capability.SET_BEAM,
        Capability.VENT,
        Capability.PUMP,
        Capability.STAGE_MOVE_TO,
        Capability.STAGE_MOVE_DELTA,
        Capability.GEOMETRY_SET,
        Capability.GEOMETRY_RESET,
        Capability.CENTERING_SET,
        Capability.AWAIT_HUMAN,
        Capability.DEFORMATION_MOVE,
    }
)
