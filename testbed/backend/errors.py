"""Errors raised by the backend's store and mapped to HTTP responses by the routes.

Each carries the HTTP status SmartEM would answer in strict mode; in ``smartem`` mode some routes remap them
(for example every acknowledgement error becomes a 500, as on the real backend).
"""

from __future__ import annotations


class Rejected(Exception):
    """A request the backend refuses: ``status_code`` and a human-readable ``detail``."""

    status_code = 400

    def __init__(self, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class NotFound(Rejected):
    """The entity, session or instruction (or a parent it needs) does not exist."""

    status_code = 404


class Conflict(Rejected):
    """The request conflicts with stored state (duplicate uuid, a different final ack)."""

    status_code = 409


class Forbidden(Rejected):
    """The session belongs to another agent."""

    status_code = 403


class DuplicateEntity(Conflict):
    """A create named a uuid that already exists (or twice in one batch). ``uuids`` lists them."""

    def __init__(self, kind: str, uuids: list[str]) -> None:
        super().__init__(f"{kind} already exists: {', '.join(uuids[:10])}")
        self.kind = kind
        self.uuids = uuids


class ServerCrash(Exception):
    """An unhandled server error, reproduced as SmartEM produces it: 500 ``text/plain`` "Internal Server
    Error", after which the server closes the keep-alive connection. Raised only in ``smartem`` mode."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


__all__ = ["Conflict", "DuplicateEntity", "Forbidden", "NotFound", "Rejected", "ServerCrash"]
