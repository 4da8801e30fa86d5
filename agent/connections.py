"""Builds the backend's auth and TLS options from the settings, in one place for every command."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from agent.settings import BackendSettings, ConfigError
from backend_client.auth import ClientCredentialsAuth, StaticTokenAuth


def backend_auth(settings: BackendSettings) -> httpx.Auth | None:
    """Static bearer token, OAuth2 client credentials, or no auth (a testbed on loopback)."""
    token = settings.resolved_token()
    if token:
        return StaticTokenAuth(token)
    if settings.oauth_token_url or settings.client_id:
        secret = settings.resolved_client_secret()
        if not (settings.oauth_token_url and settings.client_id and secret):
            raise ConfigError(
                "OAuth2 needs backend.oauth_token_url, backend.client_id and a client secret "
                "(EM_AGENT_BACKEND__CLIENT_SECRET or backend.client_secret_file)"
            )
        return ClientCredentialsAuth(
            settings.oauth_token_url,
            settings.client_id,
            secret,
            verify=backend_verify(settings) is not False,
        )
    return None


def backend_verify(settings: BackendSettings) -> bool | ssl.SSLContext:
    """TLS verification: on by default; a custom CA bundle when configured."""
    if not settings.verify_tls:
        return False
    if settings.ca_bundle is not None:
        if not settings.ca_bundle.is_file():
            raise ConfigError(f"backend.ca_bundle not found: {settings.ca_bundle}")
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    return True


def backend_client_options(settings: BackendSettings, auth: httpx.Auth | None) -> dict[str, Any]:
    """Keyword arguments every ``SmartEMAPIClient``/``AsyncSmartEMAPIClient`` gets: auth, TLS verification, and
    the read and connect timeouts (always applied)."""
    return {
        "auth": auth,
        "verify": backend_verify(settings),
        "timeout": settings.read_timeout_s,
        "connect_timeout": settings.connect_timeout_s,
    }
