"""``semphony.client``: the client, runs, sessions and the SDK's exceptions (re-exported from
:mod:`agent.devices.semphony.client` and :mod:`agent.devices.errors`)."""

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException, SemphonyUnsupportedError
from agent.devices.semphony.client import Run, SemphonyClient, Session, run

__all__ = [
    "Run",
    "SemphonyApiError",
    "SemphonyClient",
    "SemphonyGuardrailException",
    "SemphonyUnsupportedError",
    "Session",
    "run",
]
