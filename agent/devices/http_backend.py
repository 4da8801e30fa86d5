"""The Semphony HTTP backend: the control server's REST API over httpx, authenticated with a Bearer API key.

Paths (shared with the testbed's Semphony-compatible server)::

    POST /api/runs                                              create or resume a run
    GET  /api/runs/{run_id}
    POST /api/runs/{run_id}/sessions                            open a session
    POST /api/runs/{run_id}/sessions/{session_id}/close
    PUT  /api/runs/{run_id}/sessions/{session_id}/guardrails    {"guardrails": {...} | null}
    POST /api/runs/{run_id}/sessions/{session_id}/devices       attach a device
    POST /api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}
    GET  /api/images/{image_id}                                 artifact bytes

A guardrail refusal is HTTP 422 with ``{"detail": {"guardrail_type": ..., "details": {...}}}`` and becomes
:class:`SemphonyGuardrailException`; any other non-2xx answer, a transport failure, or a non-JSON body (a
login redirect page, say) becomes :class:`SemphonyApiError` carrying the status. Redirects are not followed,
because a redirect from an API endpoint means "go and log in", never success.
The API key never appears in errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from agent.devices.backend import DeviceBackend
from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException

__all__ = ["SemphonyHttpBackend"]


class SemphonyHttpBackend(DeviceBackend):
    """A :class:`DeviceBackend` talking to a Semphony control server."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created lazily so the connection pool belongs to the event loop that uses it.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
                timeout=self._timeout,
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = await self._http().request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise SemphonyApiError(
                f"{method} {path}: timed out ({type(exc).__name__})", status_code=None
            ) from exc
        except httpx.HTTPError as exc:
            raise SemphonyApiError(f"{method} {path}: cannot reach the control server: {exc}") from exc
        if response.is_success:
            return response
        detail: Any = None
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = response.text[:200]
        if response.status_code == 422 and isinstance(detail, dict) and "guardrail_type" in detail:
            raise SemphonyGuardrailException(str(detail["guardrail_type"]), dict(detail.get("details") or {}))
        message = detail if isinstance(detail, str) and detail else response.reason_phrase
        raise SemphonyApiError(f"{method} {path}: {message}", status_code=response.status_code, body=detail)

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self._request(method, path, body)
        try:
            data = response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "unknown")
            raise SemphonyApiError(
                f"{method} {path}: expected JSON, got {kind} (login page?)", status_code=response.status_code
            ) from exc
        if not isinstance(data, dict):
            raise SemphonyApiError(
                f"{method} {path}: expected a JSON object", status_code=response.status_code
            )
        return data

    async def create_run(
        self,
        name: str,
        *,
        resume: bool = True,
        metadata: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_run`."""
        body = {"name": name, "resume": resume, "metadata": metadata, "system": system}
        return await self._json("POST", "/api/runs", body)

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.get_run`."""
        return await self._json("GET", f"/api/runs/{int(run_id)}")

    async def create_session(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_session`."""
        return await self._json("POST", f"/api/runs/{int(run_id)}/sessions", {})

    async def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.close_session`."""
        return await self._json("POST", f"/api/runs/{int(run_id)}/sessions/{int(session_id)}/close", {})

    async def set_guardrails(
        self, run_id: int, session_id: int, guardrails: dict[str, Any] | None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.set_guardrails`."""
        path = f"/api/runs/{int(run_id)}/sessions/{int(session_id)}/guardrails"
        return await self._json("PUT", path, {"guardrails": guardrails})

    async def attach(
        self,
        run_id: int,
        session_id: int,
        *,
        device_slug: str | None,
        device_id: int | None,
        kind: str | None,
        force_close: bool = False,
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.attach`."""
        body = {"device_slug": device_slug, "device_id": device_id, "kind": kind, "force_close": force_close}
        return await self._json("POST", f"/api/runs/{int(run_id)}/sessions/{int(session_id)}/devices", body)

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.invoke`."""
        path = f"/api/runs/{int(run_id)}/sessions/{int(session_id)}/commands/{quote(capability_id, safe='')}"
        return await self._json("POST", path, payload or {})

    async def download(self, image_id: str) -> bytes:
        """See :meth:`DeviceBackend.download`."""
        response = await self._request("GET", f"/api/images/{quote(str(image_id), safe='')}")
        return response.content

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
