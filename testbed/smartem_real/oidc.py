"""A Keycloak stand-in: one realm's JWKS and its OAuth2 client-credentials token endpoint, RS256.

The real SmartEM backend cannot run without authentication: it fetches the realm's JWKS from
``{KEYCLOAK_URL}/realms/{realm}/protocol/openid-connect/certs`` and checks every bearer token's RS256
signature, issuer, expiry and ``azp``. This server gives it exactly those two endpoints, so the backend's own
token check runs unchanged, and em-agent obtains its tokens the way it would from Keycloak.

It listens on 127.0.0.1 only and runs in a daemon thread. The token lifetime is adjustable while it runs
(``token_lifetime_s``), which the auth tests use to make tokens expire within a test. Counters record every
token request, so a test can tell one refused attempt from a retry storm.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["OidcStandIn"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class OidcStandIn:
    """JWKS + client-credentials token endpoint of one realm, on loopback.

    Args:
        realm: the realm name (the backend's ``KEYCLOAK_REALM``).
        client_id: the only client the token endpoint knows (also the tokens' ``azp``).
        client_secret: its secret; a random one when omitted.
        token_lifetime_s: ``expires_in`` of the tokens issued from now on (changeable at run time).
    """

    def __init__(
        self,
        *,
        realm: str = "smartem",
        client_id: str = "SmartEM_Agent",
        client_secret: str | None = None,
        token_lifetime_s: float = 300.0,
    ) -> None:
        self.realm = realm
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_hex(16)
        self.token_lifetime_s = token_lifetime_s
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._token_requests = 0
        self._tokens_issued = 0
        self._refusals = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what the backend takes as ``KEYCLOAK_URL``."""
        if self._server is None:
            raise RuntimeError("OidcStandIn is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of every token (Keycloak's form: ``{url}/realms/{realm}``)."""
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def token_url(self) -> str:
        """The client-credentials token endpoint."""
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        """The realm's JWKS."""
        return f"{self.issuer}/protocol/openid-connect/certs"

    # -- counters ----------------------------------------------------------------------------------------------

    @property
    def token_requests(self) -> int:
        """Requests to the token endpoint so far (granted or refused)."""
        with self._lock:
            return self._token_requests

    @property
    def tokens_issued(self) -> int:
        """Tokens handed out so far."""
        with self._lock:
            return self._tokens_issued

    @property
    def refusals(self) -> int:
        """Token requests refused (unknown client, wrong secret, wrong grant)."""
        with self._lock:
            return self._refusals

    # -- tokens ------------------------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The public key set, as Keycloak serves it."""
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kid": self._kid,
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "n": _uint_b64url(numbers.n),
                    "e": _uint_b64url(numbers.e),
                }
            ]
        }

    def issue_token(self, *, lifetime_s: float | None = None, azp: str | None = None) -> str:
        """A signed access token (tests also use it directly, e.g. for reading the backend's GET endpoints)."""
        now = int(time.time())
        lifetime = self.token_lifetime_s if lifetime_s is None else lifetime_s
        header = {"alg": "RS256", "typ": "JWT", "kid": self._kid}
        claims = {
            "iss": self.issuer,
            "sub": f"service-account-{self.client_id}",
            "azp": azp or self.client_id,
            "typ": "Bearer",
            "iat": now,
            "exp": now + max(1, round(lifetime)),
            "jti": secrets.token_hex(8),
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._token_requests += 1
        client_id = form.get("client_id") or (basic[0] if basic else "")
        secret = form.get("client_secret") or (basic[1] if basic else "")
        if form.get("grant_type") != "client_credentials":
            outcome: tuple[int, dict[str, Any]] = (
                400,
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"},
            )
        elif client_id != self.client_id or not secrets.compare_digest(secret, self.client_secret):
            # Keycloak's answer to a wrong client secret.
            outcome = (
                401,
                {
                    "error": "unauthorized_client",
                    "error_description": "Invalid client or Invalid client credentials",
                },
            )
        else:
            lifetime = self.token_lifetime_s
            token = self.issue_token(lifetime_s=lifetime)
            with self._lock:
                self._tokens_issued += 1
            return 200, {
                "access_token": token,
                "expires_in": max(1, round(lifetime)),
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            }
        with self._lock:
            self._refusals += 1
        return outcome

    # -- server ------------------------------------------------------------------------------------------------

    def start(self) -> OidcStandIn:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is not None:
            return self
        stand_in = self
        certs_path = f"/realms/{self.realm}/protocol/openid-connect/certs"
        token_path = f"/realms/{self.realm}/protocol/openid-connect/token"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                # The backend polls the JWKS; request lines would only clutter the test output.
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == certs_path:
                    self._send(200, stand_in.jwks())
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                if self.path.split("?", 1)[0] != token_path:
                    self._send(404, {"error": "not_found"})
                    return
                form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
                basic: tuple[str, str] | None = None
                header = self.headers.get("Authorization", "")
                if header.lower().startswith("basic "):
                    try:
                        user, _, pwd = base64.b64decode(header[6:]).decode().partition(":")
                        basic = (urllib.parse.unquote(user), urllib.parse.unquote(pwd))
                    except ValueError:
                        basic = None
                status, body = stand_in._grant(form, basic)
                self._send(status, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OidcStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
