"""Optional bearer-token authentication: SmartEM's global auth dependency and a Keycloak-like token endpoint.

Off unless :class:`~testbed.backend.options.BackendOptions` has ``auth`` set. When on:

* ``POST /auth/token`` is an OAuth2 client-credentials endpoint (form ``grant_type=client_credentials``,
  ``client_id``, ``client_secret``, or the client in HTTP Basic) answering ``{access_token, token_type:
  "Bearer", expires_in}``; bad credentials -> 401 ``{"error": "invalid_client"}``, other mistakes -> 400 with
  the RFC 6749 error codes.
* Every other route needs ``Authorization: Bearer <token>`` except ``/health``, ``/status``, ``/openapi.json``,
  ``/docs`` (SmartEM's exempt list as observed) and the testbed's own ``/testbed/...`` routes (tests must always
  be able to inspect state). A refusal is 401 with ``WWW-Authenticate: Bearer`` and SmartEM's ``detail``:
  "Missing or malformed Authorization header", "Invalid token" or "Token expired".
* An open SSE stream whose token expires is ended (``close_reason`` ``token_expired``), as a gateway enforcing
  expiry would, when ``end_streams_on_expiry`` is set. Static tokens never expire.

Issued tokens are self-contained and signed (HMAC-SHA256 over the expiry and a nonce), so checking one needs no
shared table and a token stays valid across a restart of the same :class:`~testbed.backend.server.BackendServer`
(or of a CLI backend with the same client secret), as a Keycloak-issued token survives a SmartEM restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from testbed.backend.options import AuthOptions
from testbed.backend.routing import Router

TOKEN_PATH = "/auth/token"  # noqa: S105 (a URL path, not a password)
EXEMPT_PATHS = frozenset({"/health", "/status", "/openapi.json", "/docs", TOKEN_PATH})
EXEMPT_PREFIX = "/testbed/"
SCOPE_KEY = "token_expires_at"
"""Key in the ASGI scope's ``state`` (``request.state.token_expires_at``): the wall-clock expiry (Unix time,
leeway included) of the token that authorised the request, or ``None`` for a static token."""

MISSING = "Missing or malformed Authorization header"
INVALID = "Invalid token"
EXPIRED = "Token expired"

_TOKEN_PREFIX = "tb1"  # noqa: S105 (the format tag of issued tokens)
_MAX_TOKEN_LENGTH = 4096  # a header longer than any token we issue is not worth hashing


class TokenError(Exception):
    """A token was refused; ``detail`` is SmartEM's message for the reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class IssuedToken:
    """One access token from :meth:`TokenIssuer.issue`."""

    access_token: str
    expires_in: float
    expires_at: float  # Unix time


class TokenIssuer:
    """Issues and verifies the backend's bearer tokens.

    Args:
        options: the auth configuration (static tokens, client credentials, lifetime, leeway).
        key: HMAC key for issued tokens. Default: derived from the client secret when there is one (tokens then
            survive a process restart), else random.
        clock: wall clock (Unix seconds), injectable for tests.

    Thread-safe: verification is pure, and the issue counter is guarded by a lock (``BackendServer`` helpers
    issue tokens from the test's thread while the server verifies on its own).
    """

    def __init__(
        self, options: AuthOptions, *, key: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options
        if key is None:
            secret = options.client_secret
            key = (
                hashlib.sha256(b"em-agent testbed token key\0" + secret.encode()).digest()
                if secret
                else secrets.token_bytes(32)
            )
        self._key = key
        self._clock = clock
        self._static = tuple(t.encode() for t in options.static_tokens)
        self._lock = threading.Lock()
        self.issued = 0

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(client_id={self.options.client_id!r}, static_tokens={len(self._static)}, key=***)"
        )

    # -- client credentials ----------------------------------------------------------------------------------

    def check_client(self, client_id: str, client_secret: str) -> bool:
        """True when the pair matches the configured client (constant-time comparison)."""
        expected_id, expected_secret = self.options.client_id, self.options.client_secret
        if expected_id is None or expected_secret is None:
            return False
        # Compare both halves every time so the answer's timing says nothing about which one was wrong.
        id_ok = hmac.compare_digest(client_id.encode(), expected_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), expected_secret.encode())
        return id_ok and secret_ok

    def issue(self, lifetime_s: float | None = None) -> IssuedToken:
        """A new signed token valid for ``lifetime_s`` (default: the configured ``token_lifetime_s``)."""
        lifetime = self.options.token_lifetime_s if lifetime_s is None else lifetime_s
        if not lifetime > 0:
            raise ValueError("token lifetime must be > 0 seconds")
        expires_at = self._clock() + lifetime
        # Milliseconds: sub-second lifetimes are what tests use to make tokens expire mid-stream.
        body = f"{_TOKEN_PREFIX}.{math.ceil(expires_at * 1000)}.{secrets.token_urlsafe(12)}"
        token = f"{body}.{self._sign(body)}"
        with self._lock:
            self.issued += 1
        return IssuedToken(access_token=token, expires_in=lifetime, expires_at=expires_at)

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # -- verification ----------------------------------------------------------------------------------------

    def verify(self, token: str) -> float | None:
        """Check a bearer token: its expiry (Unix time, leeway included), or ``None`` for a static token that
        never expires. Raises :class:`TokenError` ("Invalid token" / "Token expired")."""
        raw = token.encode()
        if len(raw) > _MAX_TOKEN_LENGTH:
            raise TokenError(INVALID)
        # Check every static token, so the time taken does not reveal which one nearly matched.
        if sum(hmac.compare_digest(raw, static) for static in self._static):
            return None
        body, _, signature = token.rpartition(".")
        prefix, _, rest = body.partition(".")
        expiry_text, _, nonce = rest.partition(".")
        if prefix != _TOKEN_PREFIX or not expiry_text.isdigit() or not nonce:
            raise TokenError(INVALID)
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise TokenError(INVALID)
        deadline = int(expiry_text) / 1000 + self.options.leeway_s
        if self._clock() >= deadline:
            raise TokenError(EXPIRED)
        return deadline

    def authorize(self, header: str | None) -> float | None:
        """Check an ``Authorization`` header value; see :meth:`verify`. Raises :class:`TokenError`."""
        if header is None:
            raise TokenError(MISSING)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise TokenError(MISSING)
        return self.verify(token)


# -- the guard -----------------------------------------------------------------------------------------------


def is_exempt(path: str) -> bool:
    """True for the routes that never need a token."""
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIX)


class AuthMiddleware:
    """Pure ASGI middleware (streaming responses pass through untouched) requiring a valid bearer token.

    It records the token's expiry in the scope's ``state`` under :data:`SCOPE_KEY` so the SSE stream can end
    itself when the token expires."""

    def __init__(self, app: ASGIApp, issuer: TokenIssuer) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 without a valid token, else pass the request on."""
        if scope["type"] != "http" or is_exempt(str(scope["path"])):
            await self.app(scope, receive, send)
            return
        header: str | None = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        try:
            expires_at = self.issuer.authorize(header)
        except TokenError as exc:
            await _unauthorized(send, exc.detail)
            return
        scope.setdefault("state", {})[SCOPE_KEY] = expires_at
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the token endpoint --------------------------------------------------------------------------------------


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="testbed"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_client(header: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from an HTTP Basic header (RFC 6749 section 2.3.1), else ``None``."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def build_auth_router(issuer: TokenIssuer) -> APIRouter:
    """``POST /auth/token`` bound to ``issuer``."""
    router = Router(tags=["auth"])

    @router.post(TOKEN_PATH)
    async def token(request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request", "send an application/x-www-form-urlencoded form")
        try:
            form = dict(
                parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
            )
        except UnicodeDecodeError:
            return _oauth_error(400, "invalid_request", "the form is not UTF-8")
        grant_type = form.get("grant_type")
        if grant_type is None:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        basic = _basic_client(request.headers.get("authorization"))
        client_id, client_secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not client_id or not client_secret:
            return _oauth_error(401, "invalid_client", "client_id and client_secret are required")
        if not issuer.check_client(client_id, client_secret):
            return _oauth_error(401, "invalid_client", "invalid client credentials")
        issued = issuer.issue()
        expires_in: float = issued.expires_in
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "Bearer",
                # Keycloak sends whole seconds; keep sub-second lifetimes exact for tests.
                "expires_in": int(expires_in) if expires_in.is_integer() else expires_in,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    return router


__all__ = [
    "EXPIRED",
    "INVALID",
    "MISSING",
    "SCOPE_KEY",
    "TOKEN_PATH",
    "AuthMiddleware",
    "IssuedToken",
    "TokenError",
    "TokenIssuer",
    "build_auth_router",
    "is_exempt",
]
