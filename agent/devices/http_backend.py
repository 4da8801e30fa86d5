"""The Semphony HTTP backend: the control server's REST API over httpx, authenticated with a Bearer API key.

Routes, bodies, status codes and capability ids come from :mod:`agent.devices.semphony_protocol`, which marks
what the SDK reference states and what is assumed (shared with the testbed's Semphony-compatible server).

A guardrail refusal becomes :class:`SemphonyGuardrailException`, a call the device cannot express
:class:`SemphonyUnsupportedError`; any other non-2xx answer, a transport failure, or a non-JSON body (a login
redirect page, say) becomes :class:`SemphonyApiError` carrying the status. Redirects are not followed,
because a redirect from an API endpoint means "go and log in", never success.
The API key never appears in errors.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.devices.backend import DeviceBackend
from agent.devices.errors import SemphonyApiError
from agent.devices.semphony_protocol import (
    ROUTES,
    Route,
    attach_body,
    error_from_response,
    guardrails_body,
    run_body,
)

__all__ = ["SemphonyHttpBackend"]


class SemphonyHttpBackend(DeviceBackend):
    """A :class:`DeviceBackend` talking to a Semphony control server."""

    kind = "semphony"

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

    async def _request(self, route: Route, body: Any = None, **params: object) -> httpx.Response:
        method, path = route.method, route.path(**params)
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
        raise error_from_response(f"{method} {path}", response.status_code, detail, response.reason_phrase)

    async def _json(self, route: Route, body: Any = None, **params: object) -> dict[str, Any]:
        response = await self._request(route, body, **params)
        label = f"{route.method} {route.path(**params)}"
        try:
            data = response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "unknown")
            raise SemphonyApiError(
                f"{label}: expected JSON, got {kind} (login page?)", status_code=response.status_code
            ) from exc
        if not isinstance(data, dict):
            raise SemphonyApiError(f"{label}: expected a JSON object", status_code=response.status_code)
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
        body = run_body(name, resume=resume, metadata=metadata, system=system)
        return await self._json(ROUTES.create_run, body)

    async def get_run(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.get_run`."""
        return await self._json(ROUTES.get_run, run_id=int(run_id))

    async def create_session(self, run_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.create_session`."""
        return await self._json(ROUTES.create_session, {}, run_id=int(run_id))

    async def close_session(self, run_id: int, session_id: int) -> dict[str, Any]:
        """See :meth:`DeviceBackend.close_session`."""
        return await self._json(ROUTES.close_session, {}, run_id=int(run_id), session_id=int(session_id))

    async def set_guardrails(
        self, run_id: int, session_id: int, guardrails: dict[str, Any] | None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.set_guardrails`."""
        return await self._json(
            ROUTES.set_guardrails, guardrails_body(guardrails), run_id=int(run_id), session_id=int(session_id)
        )

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
        body = attach_body(device_slug=device_slug, device_id=device_id, kind=kind, force_close=force_close)
        return await self._json(ROUTES.attach_device, body, run_id=int(run_id), session_id=int(session_id))

    async def invoke(
        self, run_id: int, session_id: int, capability_id: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See :meth:`DeviceBackend.invoke`."""
        return await self._json(
            ROUTES.invoke,
            payload or {},
            run_id=int(run_id),
            session_id=int(session_id),
            capability_id=capability_id,
        )

    async def download(self, image_id: str) -> bytes:
        """See :meth:`DeviceBackend.download`."""
        response = await self._request(ROUTES.download_image, image_id=str(image_id))
        return response.content

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
