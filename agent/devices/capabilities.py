"""Capability ids (the names of the commands a Semphony control server dispatches to an attached device) and
which of them act on the instrument.

The ids are part of the wire protocol, so they are defined in :mod:`agent.devices.semphony_protocol` (which
marks the one the SDK reference names, ``SetViewField``) and re-exported here.
"""

from __future__ import annotations

from agent.devices.semphony_protocol import Capability

__all__ = ["ACTION_CAPABILITIES", "Capability"]


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
