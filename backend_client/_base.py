"""Configuration shared by the sync and async API clients (base URL, timeouts, retry policy, logger)."""

from __future__ import annotations

import logging

import httpx

from backend_client.retry import RetryPolicy

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
USER_AGENT = "em-agent-backend-client"

#: The body SmartEM's client sends is JSON; say so, and ask for JSON back.
DEFAULT_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


def make_timeout(timeout: float | httpx.Timeout, connect_timeout: float | None = None) -> httpx.Timeout:
    """An ``httpx.Timeout`` with connect and read set separately (SmartEM's own client applied none at all).

    A float ``timeout`` is the read/write/pool timeout; connect defaults to ``min(timeout, 5 s)`` so an
    unreachable backend is noticed quickly while slow responses still get the full ``timeout``.
    """
    if isinstance(timeout, httpx.Timeout):
        if connect_timeout is None:
            return timeout
        return httpx.Timeout(timeout.read, connect=connect_timeout, write=timeout.write, pool=timeout.pool)
    if timeout <= 0:
        raise ValueError("timeout must be positive: a request without a timeout can block forever")
    connect = connect_timeout if connect_timeout is not None else min(timeout, DEFAULT_CONNECT_TIMEOUT)
    return httpx.Timeout(timeout, connect=connect)


class ClientSettings:
    """Settings common to :class:`SmartEMAPIClient` and :class:`AsyncSmartEMAPIClient`."""

    def __init__(
        self,
        base_url: str,
        timeout: float | httpx.Timeout,
        logger: logging.Logger | None,
        retry: RetryPolicy | None,
        connect_timeout: float | None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = make_timeout(timeout, connect_timeout)
        # Never add handlers or change levels: the application configures logging (SmartEM's client forced
        # INFO and added a handler per instance, duplicating every line).
        self.logger = logger or logging.getLogger("backend_client")
        self.retry = retry or RetryPolicy()
