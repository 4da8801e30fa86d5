"""The one retry policy of ``backend_client`` (built on tenacity).

What is retried is decided by :func:`is_retryable` alone: connection errors, timeouts, 502/503/504 and 429,
all of which :mod:`backend_client.errors` maps to :class:`~backend_client.errors.BackendUnavailableError`.
Every other 4xx, and 500 (SmartEM's answer to a duplicate create), is raised at once.

The wait is exponential with full jitter, ``uniform(wait_initial, min(wait_max, wait_initial * base**n))``, or
the server's ``Retry-After`` when it sent one (capped at ``max_retry_after``), and never longer than what is
left of the total time budget. Attempts stop at ``attempts`` or when ``timeout`` seconds have passed since the
first one; the last exception is then raised unchanged. Each scheduled retry is logged once, with structured
fields, from a tenacity ``before_sleep`` hook, and handed to any extra hooks (metrics).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import tenacity

from backend_client.errors import BackendError, BackendUnavailableError

DEFAULT_ATTEMPTS = 5
DEFAULT_TIMEOUT = 60.0
DEFAULT_WAIT_INITIAL = 0.5
DEFAULT_WAIT_MAX = 30.0

_log = logging.getLogger("backend_client.retry")


@dataclass(frozen=True)
class RetryDetails:
    """What a retry hook receives: one per scheduled retry."""

    operation: str
    retry_num: int
    wait_s: float
    waited_so_far_s: float
    caused_by: BaseException


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures (connection errors, timeouts, 502/503/504, 429); False for everything
    else."""
    return isinstance(exc, BackendUnavailableError)


def backoff_delay(
    failures: int, initial: float, maximum: float, *, exp_base: float = 2.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform between ``initial`` and ``min(maximum,
    initial*base**(n-1))``.

    ``failures`` counts consecutive failures so far (1 for the first retry). Shared with the SSE reconnect
    loop.
    """
    if failures < 1 or maximum <= 0:
        return max(0.0, initial) if failures >= 1 else 0.0
    # Cap the exponent so huge failure counts (max_retries=None) cannot overflow a float.
    ceiling = min(maximum, initial * exp_base ** min(failures - 1, 64))
    low = min(initial, ceiling)
    return (rng or random).uniform(low, max(low, ceiling))


def _no_sleep(_seconds: float) -> None:
    """Sleep replacement for instant policies."""


async def _no_async_sleep(_seconds: float) -> None:
    """Async sleep replacement for instant policies (still yields to the loop)."""
    await asyncio.sleep(0)


@dataclass(frozen=True)
class RetryPolicy:
    """Declarative retry policy, built once and injected into the clients.

    Attributes:
        attempts: total attempts including the first (1 disables retrying).
        timeout: total time budget in seconds measured from the first attempt.
        wait_initial: first backoff, seconds.
        wait_max: cap for one backoff, seconds.
        exp_base: growth factor of the backoff.
        max_retry_after: cap for a server's ``Retry-After``, seconds.
        hooks: extra callables receiving a :class:`RetryDetails` per scheduled retry.
        sleep: replaces ``time.sleep`` (tests); ``None`` means real sleeping.
        async_sleep: replaces ``asyncio.sleep`` (tests); ``None`` means real sleeping.
    """

    attempts: int = DEFAULT_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    wait_initial: float = DEFAULT_WAIT_INITIAL
    wait_max: float = DEFAULT_WAIT_MAX
    exp_base: float = 2.0
    max_retry_after: float = 120.0
    hooks: Sequence[Callable[[RetryDetails], None]] = field(default_factory=tuple)
    sleep: Callable[[float], None] | None = None
    async_sleep: Callable[[float], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if self.timeout <= 0 or self.wait_initial < 0 or self.wait_max < 0:
            raise ValueError("RetryPolicy timeouts and waits must be positive")

    @classmethod
    def instant(cls, attempts: int = 3) -> RetryPolicy:
        """A policy with the same predicate and attempt cap but no real sleeping (for tests)."""
        return cls(attempts=attempts, sleep=_no_sleep, async_sleep=_no_async_sleep)

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A single attempt: errors are raised at once."""
        return cls(attempts=1)

    def with_hooks(self, *hooks: Callable[[RetryDetails], None]) -> RetryPolicy:
        """A copy with extra retry hooks appended."""
        return replace(self, hooks=(*self.hooks, *hooks))

    def backoff(self, failures: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1-based), outside any attempt or time budget.

        For loops that retry for ever rather than give up (the ingest flusher: rows are never dropped): the
        server's ``Retry-After`` when ``exc`` carries one (capped), otherwise exponential backoff with full
        jitter between ``wait_initial`` and ``wait_max``.
        """
        retry_after = exc.retry_after if isinstance(exc, BackendUnavailableError) else None
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return backoff_delay(failures, self.wait_initial, self.wait_max, exp_base=self.exp_base)

    def compute_wait(self, retry_num: int, exc: BaseException | None, elapsed: float = 0.0) -> float:
        """Seconds to wait before retry number ``retry_num`` (1-based) after ``exc``.

        :meth:`backoff`, never longer than the rest of the total time budget.
        """
        return max(0.0, min(self.backoff(retry_num, exc), self.timeout - elapsed))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.compute_wait(state.attempt_number, exc, state.seconds_since_start or 0.0)

    def _stop(self) -> tenacity.stop.stop_base:
        return tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.timeout)

    def _before_sleep(self, operation: str) -> Callable[[tenacity.RetryCallState], None]:
        def hook(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if exc is None:  # only exceptions are retried; a result never reaches this hook
                return
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            details = RetryDetails(
                operation=operation,
                retry_num=state.attempt_number,
                wait_s=wait,
                waited_so_far_s=state.seconds_since_start or 0.0,
                caused_by=exc,
            )
            _log.warning(
                "backend request failed, retrying",
                extra={
                    "event": "backend.retry",
                    "operation": operation,
                    "retry_num": details.retry_num,
                    "wait_s": round(wait, 3),
                    "waited_so_far_s": round(details.waited_so_far_s, 3),
                    "caused_by": type(exc).__name__,
                    "status_code": exc.status_code if isinstance(exc, BackendError) else None,
                },
            )
            for extra_hook in self.hooks:
                extra_hook(details)

        return hook

    def retrying(self, operation: str) -> tenacity.Retrying:
        """A tenacity ``Retrying`` for a synchronous operation named ``operation`` (used in logs)."""
        return tenacity.Retrying(
            stop=self._stop(),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
            before_sleep=self._before_sleep(operation),
            sleep=self.sleep or time.sleep,
        )

    def async_retrying(self, operation: str) -> tenacity.AsyncRetrying:
        """A tenacity ``AsyncRetrying`` for a coroutine operation named ``operation``."""
        return tenacity.AsyncRetrying(
            stop=self._stop(),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
            before_sleep=self._before_sleep(operation),
            sleep=self.async_sleep or asyncio.sleep,
        )


__all__ = ["RetryDetails", "RetryPolicy", "backoff_delay", "is_retryable"]
