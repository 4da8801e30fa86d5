"""Exceptions a handler raises to choose its acknowledgement status.

A handler returns a JSON-serialisable dict for ``processed``. It raises :class:`InstructionDeclined` to refuse
without acting (wrong state, nothing configured to act on, a rule says no) and :class:`InstructionFailed` when
it tried and could not. Device-layer exceptions need no translation: the executor maps
``SemphonyGuardrailException`` to ``declined`` and ``SemphonyApiError``/``AthenaError`` to ``failed``.
"""

from __future__ import annotations

from typing import Any


class InstructionError(Exception):
    """Base of the handler outcome exceptions; ``details`` (JSON-serialisable) go into the ack result."""

    # ``message`` is positional-only so that a result with its own "message" field can be passed as details.
    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InstructionDeclined(InstructionError):
    """Refused without acting: acknowledged ``declined`` with the message."""


class InstructionFailed(InstructionError):
    """Attempted and failed: acknowledged ``failed`` with the message."""
