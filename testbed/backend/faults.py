"""Fault injection: fail the next N requests, add latency, and (through the stream hub) drop open SSE streams.

The injector is shared between the server thread and test threads (``BackendServer.fail_next`` is called from
the test's thread), so its state is guarded by a lock. Requests under ``/testbed/`` are never affected, so a
test can always inspect and clear faults.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT_PREFIX = "/testbed/"


@dataclass
class _Failure:
    remaining: int
    status: int
    retry_after: float | None
    path_prefix: str | None


class FaultInjector:
    """Thread-safe fault state consulted by :class:`FaultMiddleware` on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: _Failure | None = None
        self._latency = 0.0
        self._latency_prefix: str | None = None
        self.injected_failures = 0

    def fail_next(
        self,
        count: int,
        *,
        status: int = 503,
        retry_after: float | None = 1.0,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (matching ``path_prefix`` if given) with ``status`` (503 or 429)
        and a ``Retry-After`` header of ``retry_after`` seconds (omitted when ``None``)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if status not in (429, 500, 502, 503, 504):
            raise ValueError(f"unsupported fault status {status}: use 429 or a 5xx")
        with self._lock:
            self._failure = _Failure(count, status, retry_after, path_prefix) if count else None

    def add_latency(self, seconds: float, *, path_prefix: str | None = None) -> None:
        """Delay every request (matching ``path_prefix`` if given) by ``seconds`` before handling it."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = seconds
            self._latency_prefix = path_prefix

    def clear(self) -> None:
        """Remove failures and latency."""
        with self._lock:
            self._failure = None
            self._latency = 0.0
            self._latency_prefix = None

    def reset(self) -> None:
        """Remove failures and latency and zero the injected-failure counter (a backend reset)."""
        with self._lock:
            self._failure = None
            self._latency = 0.0
            self._latency_prefix = None
            self.injected_failures = 0

    def snapshot(self) -> dict[str, Any]:
        """The current fault settings (for ``GET /testbed/faults``)."""
        with self._lock:
            failure = self._failure
            return {
                "fail_remaining": failure.remaining if failure else 0,
                "fail_status": failure.status if failure else None,
                "retry_after": failure.retry_after if failure else None,
                "fail_path_prefix": failure.path_prefix if failure else None,
                "latency": self._latency,
                "latency_path_prefix": self._latency_prefix,
                "injected_failures": self.injected_failures,
            }

    def decide(self, path: str) -> tuple[float, _Failure | None]:
        """Latency to apply and failure to answer for one request (consumes one failure)."""
        with self._lock:
            latency = (
                self._latency
                if self._latency_prefix is None or path.startswith(self._latency_prefix)
                else 0.0
            )
            failure = self._failure
            if failure is None or (
                failure.path_prefix is not None and not path.startswith(failure.path_prefix)
            ):
                return latency, None
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failure = None
            self.injected_failures += 1
            return latency, _Failure(1, failure.status, failure.retry_after, failure.path_prefix)


class FaultMiddleware:
    """Pure ASGI middleware (so streaming responses pass through untouched) applying a
    :class:`FaultInjector`."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Delay and/or fail the request, else pass it on."""
        if scope["type"] != "http" or str(scope["path"]).startswith(EXEMPT_PREFIX):
            await self.app(scope, receive, send)
            return
        latency, failure = self.injector.decide(str(scope["path"]))
        if latency > 0:
            await asyncio.sleep(latency)
        if failure is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": f"injected fault: HTTP {failure.status}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if failure.retry_after is not None:
            # Retry-After is whole seconds on the wire; round up so a client never retries too early.
            headers.append((b"retry-after", str(max(0, int(-(-failure.retry_after // 1)))).encode()))
        await send({"type": "http.response.start", "status": failure.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["FaultInjector", "FaultMiddleware"]
