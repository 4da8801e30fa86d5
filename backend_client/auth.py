"""Authentication as ``httpx.Auth``: a static bearer token, and OAuth2 client credentials (Keycloak).

:class:`ClientCredentialsAuth` caches the token, refreshes it ``refresh_margin`` seconds (30 by default)
before it expires, and on a 401 refreshes once and resends the request once (a second 401 is returned to the
caller, which maps it to :class:`~backend_client.errors.AuthenticationError`). Concurrent requests share one
refresh: the fetch runs under a lock and a 401 only invalidates the token that request actually used, so a
burst of 401s after an expiry costs one token request.

Tokens and secrets never appear in logs, ``repr`` or exception messages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from backend_client.errors import AuthenticationError, BackendUnavailableError

_log = logging.getLogger("backend_client.auth")

DEFAULT_REFRESH_MARGIN = 30.0
DEFAULT_EXPIRES_IN = 300.0


class StaticTokenAuth(httpx.Auth):
    """Send a fixed ``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("StaticTokenAuth needs a non-empty token")
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the bearer header."""
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "StaticTokenAuth(token=***)"


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # on the auth's clock (monotonic by default)
    lifetime: float  # the endpoint's expires_in, seconds


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials flow with a cached token.

    Args:
        token_url: the token endpoint (Keycloak: ``{url}/realms/{realm}/protocol/openid-connect/token``).
        client_id: the client id.
        client_secret: the client secret (kept private; never logged).
        scope: optional ``scope`` form value.
        refresh_margin: refresh when the token has less than this many seconds left (half its lifetime for a
            token that lives less than twice as long).
        timeout: timeout for token requests, seconds.
        default_expires_in: token lifetime assumed when the endpoint omits ``expires_in``.
        transport: sync transport for token requests (tests inject ``httpx.MockTransport``).
        async_transport: async transport for token requests.
        clock: monotonic clock, injectable for tests.
        verify: TLS verification for token requests.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: float = 10.0,
        default_expires_in: float = DEFAULT_EXPIRES_IN,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        verify: bool = True,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("ClientCredentialsAuth needs a client id and a client secret")
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self.refresh_margin = refresh_margin
        self._timeout = timeout
        self._default_expires_in = default_expires_in
        self._transport = transport
        self._async_transport = async_transport
        self._clock = clock
        self._verify = verify
        self._token: _Token | None = None
        self._state_lock = threading.Lock()  # guards _token (short critical sections only)
        self._sync_fetch_lock = threading.Lock()  # one sync fetch at a time
        # asyncio locks are bound to one loop; keep one per loop so the auth works from several loops/threads.
        self._async_fetch_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_client: httpx.Client | None = None
        self.fetch_count = 0

    @classmethod
    def for_keycloak(
        cls, keycloak_url: str, realm: str, client_id: str, client_secret: str, **kwargs: Any
    ) -> ClientCredentialsAuth:
        """Build the auth for a Keycloak realm (``KEYCLOAK_URL``/``KEYCLOAK_REALM`` of SmartEM's
        agent.env)."""
        url = f"{keycloak_url.rstrip('/')}/realms/{realm}/protocol/openid-connect/token"
        return cls(url, client_id, client_secret, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, secret=***)"
        )

    # -- token cache -----------------------------------------------------------------------------------------

    def _valid_token(self) -> str | None:
        with self._state_lock:
            token = self._token
        # A token shorter-lived than twice the margin is refreshed at half its life: with the full margin it would
        # count as expired when issued, and every request would fetch a new one from the token endpoint.
        margin = min(self.refresh_margin, token.lifetime / 2) if token is not None else 0.0
        if token is not None and self._clock() + margin < token.expires_at:
            return token.value
        return None

    def invalidate(self, used: str | None = None) -> None:
        """Forget the cached token (only if it is still ``used``, so concurrent 401s refresh once)."""
        with self._state_lock:
            if self._token is not None and (used is None or self._token.value == used):
                self._token = None

    def _form(self) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }
        if self._scope:
            form["scope"] = self._scope
        return form

    def _store(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            code = ""
            try:
                body = response.json()
                if isinstance(body, dict) and isinstance(body.get("error"), str):
                    code = f" ({body['error'][:64]})"
            except ValueError:
                pass
            raise AuthenticationError(
                f"token endpoint refused the client credentials: HTTP {response.status_code}{code}",
                status_code=response.status_code,
                method="POST",
                path=response.request.url.path,
            )
        try:
            body = response.json()
            value = body["access_token"]
            expires_in = float(body.get("expires_in") or self._default_expires_in)
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError(
                "token endpoint answered without a usable access_token", method="POST"
            ) from exc
        if not isinstance(value, str) or not value:
            raise AuthenticationError("token endpoint answered without a usable access_token", method="POST")
        refreshed = self.fetch_count > 0
        token = _Token(value=value, expires_at=self._clock() + expires_in, lifetime=expires_in)
        with self._state_lock:
            self._token = token
            self.fetch_count += 1
        _log.info(
            "Token refreshed" if refreshed else "Token fetched",
            extra={"event": "auth.token", "expires_in_s": expires_in, "client_id": self.client_id},
        )
        return value

    def _unreachable(self, exc: Exception) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"token endpoint unreachable: {type(exc).__name__}",
            method="POST",
            path=httpx.URL(self.token_url).path,
        )

    def sync_token(self) -> str:
        """A valid access token, fetched synchronously if the cached one is missing or about to expire."""
        token = self._valid_token()
        if token is not None:
            return token
        with self._sync_fetch_lock:
            token = self._valid_token()  # another thread may have refreshed while we waited
            if token is not None:
                return token
            if self._sync_client is None:
                self._sync_client = httpx.Client(
                    transport=self._transport, timeout=self._timeout, verify=self._verify
                )
            try:
                response = self._sync_client.post(self.token_url, data=self._form())
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            return self._store(response)

    async def async_token(self) -> str:
        """A valid access token, fetched without blocking the event loop when needed."""
        token = self._valid_token()
        if token is not None:
            return token
        loop = asyncio.get_running_loop()
        lock = self._async_fetch_locks.get(loop)
        if lock is None:
            lock = self._async_fetch_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            token = self._valid_token()
            if token is not None:
                return token
            # A client per fetch: an AsyncClient's pool belongs to one event loop, and this auth may serve several
            # loops over its life (each blocking stream_instructions() call runs its own). Fetches are rare.
            try:
                async with httpx.AsyncClient(
                    transport=self._async_transport, timeout=self._timeout, verify=self._verify
                ) as client:
                    response = await client.post(self.token_url, data=self._form())
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            return self._store(response)

    # -- httpx.Auth ------------------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the token; on 401 refresh once and resend once."""
        token = self.sync_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {self.sync_token()}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Async twin of :meth:`sync_auth_flow`."""
        token = await self.async_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {await self.async_token()}"
            yield request

    def close(self) -> None:
        """Close the sync token client (async fetches use a client per fetch)."""
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None


__all__ = ["ClientCredentialsAuth", "StaticTokenAuth"]
