"""The one exception hierarchy of ``backend_client``.

::

    BackendError                      root: anything that went wrong talking to the backend
    ├── BackendUnavailableError       transient: connection/timeout errors, 502/503/504, 429 (retried)
    ├── ServerError                   500 and other 5xx: not retried (SmartEM answers a duplicate create so)
    ├── InvalidResponseError          a 2xx whose body does not match the expected model
    ├── RequestRejectedError          4xx: permanent, carries the status and the server's ``detail``
    │   ├── AuthenticationError       401/403 (also a failing token endpoint)
    │   ├── NotFoundError             404 (and 405 for the optional batch extensions)
    │   └── ConflictError             409
    ├── SessionError                  the SSE session is unusable (validation failed, 403/404 on the stream)
    └── AmqpPublishError              a message could not be confirmed by the broker

httpx exceptions never escape the package: :func:`map_transport_errors` and :func:`error_for_response` are the
single boundary where they are translated. Every error carries the request method and path (never the query
string's secrets nor any header), and create errors name the entity so a caller can ``GET`` it afterwards:
SmartEM answers a duplicate create with a bare 500 (see ``smartem-reference.md``, observed behaviour).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

_DETAIL_LIMIT = 500


class BackendError(Exception):
    """Root of every error raised by ``backend_client``.

    Attributes:
        status_code: HTTP status, or ``None`` when no response was received.
        detail: the server's ``detail`` (FastAPI) or a short excerpt of its body.
        method: the HTTP method of the failed request, when there was one.
        path: the request path (no query string, no host).
        entity_kind: for entity creates/updates, the kind (``acquisition``, ``grid``, ...).
        entity_uuid: for entity creates/updates, the uuid the request carried.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        detail: str | None = None,
        method: str | None = None,
        path: str | None = None,
        entity_kind: str | None = None,
        entity_uuid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.path = path
        self.entity_kind = entity_kind
        self.entity_uuid = entity_uuid


class BackendUnavailableError(BackendError):
    """Transient failure: the request may succeed later (retried by :mod:`backend_client.retry`).

    ``retry_after`` holds the server's ``Retry-After`` in seconds when it sent one (429/503).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(BackendError):
    """A 500 (or another non-transient 5xx). Not retried: SmartEM uses it for integrity errors.

    After a 500 on a create, the entity may exist; ``entity_kind``/``entity_uuid`` say what to ``GET``.
    """


class InvalidResponseError(BackendError):
    """The backend answered 2xx with a body that is not the documented shape."""


class RequestRejectedError(BackendError):
    """A 4xx: the request is wrong and resending it unchanged will not help."""


class AuthenticationError(RequestRejectedError):
    """401/403, or the token endpoint refused the credentials. Never contains a token or secret."""


class NotFoundError(RequestRejectedError):
    """404: the entity, session or endpoint does not exist (405 for an absent batch extension)."""


class ConflictError(RequestRejectedError):
    """409: the entity already exists (stricter backends; SmartEM itself answers 500)."""


class SessionError(BackendError):
    """The SSE session cannot be used: wrong agent, unknown or inactive session. Reconnecting will not
    help."""


class AmqpPublishError(BackendError):
    """A message was not confirmed by the broker (nacked, unroutable, or timed out waiting)."""


def _detail_from(response: httpx.Response) -> str:
    """Extract FastAPI's ``detail`` or a bounded excerpt of a text body (a streamed body may be unread)."""
    try:
        raw = response.content
    except httpx.ResponseNotRead:
        return ""
    text = raw[: _DETAIL_LIMIT * 4].decode("utf-8", errors="replace")
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
            text = detail if isinstance(detail, str) else json.dumps(detail)
    return text.strip()[:_DETAIL_LIMIT]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if
    absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_TRANSIENT_STATUS = frozenset({502, 503, 504, 429})


def error_for_response(
    response: httpx.Response,
    *,
    entity_kind: str | None = None,
    entity_uuid: str | None = None,
    absent_statuses: frozenset[int] = frozenset({404}),
) -> BackendError:
    """Translate a non-2xx response into the matching :class:`BackendError` subclass.

    ``absent_statuses`` are the statuses meaning "not there" (405 is added for optional extensions).
    """
    status = response.status_code
    detail = _detail_from(response)
    method = response.request.method
    path = response.request.url.path
    common: dict[str, Any] = {
        "status_code": status,
        "detail": detail,
        "method": method,
        "path": path,
        "entity_kind": entity_kind,
        "entity_uuid": entity_uuid,
    }
    message = f"{method} {path} -> {status}" + (f": {detail}" if detail else "")
    if status in _TRANSIENT_STATUS:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return BackendUnavailableError(message, retry_after=retry_after, **common)
    if status in (401, 403):
        return AuthenticationError(message, **common)
    if status in absent_statuses:
        return NotFoundError(message, **common)
    if status == 409:
        return ConflictError(message, **common)
    if 400 <= status < 500:
        return RequestRejectedError(message, **common)
    if status >= 500:
        return ServerError(message, **common)
    return InvalidResponseError(f"{method} {path}: unexpected status {status}", **common)


@contextlib.contextmanager
def map_transport_errors(
    method: str, path: str, *, entity_kind: str | None = None, entity_uuid: str | None = None
) -> Iterator[None]:
    """Translate httpx transport exceptions raised inside the block into :class:`BackendError`.

    The message names the exception type and the request line only: httpx messages never contain headers.
    """
    common: dict[str, Any] = {
        "method": method,
        "path": path,
        "entity_kind": entity_kind,
        "entity_uuid": entity_uuid,
    }
    try:
        yield
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise BackendUnavailableError(f"{method} {path}: {type(exc).__name__}: {exc}", **common) from exc
    except httpx.HTTPError as exc:
        raise BackendError(f"{method} {path}: {type(exc).__name__}: {exc}", **common) from exc
    except httpx.InvalidURL as exc:
        raise BackendError(f"{method} {path}: invalid URL: {exc}", **common) from exc


__all__ = [
    "AmqpPublishError",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailableError",
    "ConflictError",
    "InvalidResponseError",
    "NotFoundError",
    "RequestRejectedError",
    "ServerError",
    "SessionError",
    "error_for_response",
    "map_transport_errors",
    "parse_retry_after",
]
