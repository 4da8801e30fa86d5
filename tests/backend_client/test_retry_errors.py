"""The retry policy (what is and is not retried, Retry-After, caps, hooks) and the error mapping."""

from __future__ import annotations

import logging
import random

import httpx
import pytest

from backend_client import (
    AsyncSmartEMAPIClient,
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    RequestRejectedError,
    RetryDetails,
    RetryPolicy,
    ServerError,
    SmartEMAPIClient,
    is_retryable,
)
from backend_client.errors import error_for_response, parse_retry_after
from backend_client.retry import backoff_delay


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://b/acquisitions"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "cls", "retried"),
    [
        (400, RequestRejectedError, False),
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (404, NotFoundError, False),
        (409, ConflictError, False),
        (422, RequestRejectedError, False),
        (429, BackendUnavailableError, True),
        (500, ServerError, False),
        (501, ServerError, False),
        (502, BackendUnavailableError, True),
        (503, BackendUnavailableError, True),
        (504, BackendUnavailableError, True),
    ],
)
def test_status_mapping_and_retry_predicate(status: int, cls: type[BackendError], retried: bool) -> None:
    error = error_for_response(_response(status, json={"detail": "why"}))
    assert type(error) is cls
    assert error.status_code == status
    assert error.detail == "why"
    assert is_retryable(error) is retried


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("gone"), True),
        (httpx.ReadError("reset"), True),
        (httpx.WriteError("broken pipe"), True),
    ],
)
def test_transport_errors_are_mapped_and_retried(exc: Exception, retried: bool) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise exc

    client = SmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(handler), retry=RetryPolicy.instant(3)
    )
    with client, pytest.raises(BackendUnavailableError) as info:
        client.get_status()
    assert not isinstance(info.value, httpx.HTTPError)  # httpx exceptions never escape
    assert isinstance(info.value.__cause__, httpx.HTTPError)
    # ReadError/RemoteProtocolError are also resent once on a fresh connection inside one attempt
    per_attempt = 2 if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError) else 1
    assert calls == 3 * per_attempt


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_non_transient_statuses_are_not_retried(status: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"detail": "no"})

    with (
        SmartEMAPIClient(
            "http://b", transport=httpx.MockTransport(handler), retry=RetryPolicy.instant(5)
        ) as c,
        pytest.raises(BackendError),
    ):
        c.get_status()
    assert calls == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses_are_retried_until_success(status: int) -> None:
    answers = [httpx.Response(status), httpx.Response(status), httpx.Response(200, json={"status": "ok"})]
    with SmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(lambda r: answers.pop(0)), retry=RetryPolicy.instant(5)
    ) as client:
        assert client.get_status().status == "ok"
    assert answers == []


def test_retry_after_is_honoured_and_each_retry_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    details: list[RetryDetails] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(503, headers={"Retry-After": "2.5"}),
        httpx.Response(200, json={"status": "ok"}),
    ]
    policy = RetryPolicy(attempts=5, sleep=slept.append).with_hooks(details.append)
    caplog.set_level(logging.WARNING, logger="backend_client.retry")
    with SmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(lambda r: answers.pop(0)), retry=policy
    ) as c:
        c.get_status()
    assert slept == [7.0, 2.5]
    assert [d.retry_num for d in details] == [1, 2]
    assert [d.operation for d in details] == ["get_status", "get_status"]
    records = [r for r in caplog.records if getattr(r, "event", None) == "backend.retry"]
    assert len(records) == 2
    assert [getattr(r, "status_code", None) for r in records] == [429, 503]
    assert getattr(records[0], "wait_s", None) == 7.0


async def test_async_retry_after_is_honoured() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    answers = [httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(200, json={"status": "ok"})]
    policy = RetryPolicy(attempts=3, async_sleep=fake_sleep)
    async with AsyncSmartEMAPIClient(
        "http://b", transport=httpx.MockTransport(lambda r: answers.pop(0)), retry=policy
    ) as client:
        assert (await client.get_status()).status == "ok"
    assert slept == [3.0]


def test_retry_after_formats() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now
    assert (parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT") or 0) > 0


def test_wait_is_capped_by_max_retry_after_and_total_budget() -> None:
    policy = RetryPolicy(timeout=10.0, max_retry_after=5.0)
    exc = BackendUnavailableError("x", retry_after=60.0)
    assert policy.compute_wait(1, exc) == 5.0
    assert policy.compute_wait(1, exc, elapsed=8.0) == 2.0
    assert policy.compute_wait(1, exc, elapsed=11.0) == 0.0


def test_backoff_is_exponential_with_full_jitter_between_initial_and_cap() -> None:
    rng = random.Random(1)
    for failures in range(1, 12):
        ceiling = min(60.0, 2.0 ** (failures - 1))
        values = [backoff_delay(failures, 1.0, 60.0, rng=rng) for _ in range(200)]
        assert all(1.0 <= v <= ceiling for v in values)
    spread = [backoff_delay(5, 1.0, 60.0, rng=rng) for _ in range(200)]
    assert min(spread) < 4.0 < 12.0 < max(spread)  # jitter spans the range, not a fixed value
    assert backoff_delay(10_000, 1.0, 60.0, rng=rng) <= 60.0  # no overflow for "forever"


def test_total_time_cap_stops_retrying() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    policy = RetryPolicy(attempts=1000, timeout=0.3, wait_initial=0.05, wait_max=0.05)
    client = SmartEMAPIClient("http://b", transport=httpx.MockTransport(handler), retry=policy)
    with client, pytest.raises(BackendUnavailableError):
        client.get_status()
    assert 2 <= calls <= 10  # the 0.3 s budget, not the 1000 attempts, ended it
    assert RetryPolicy.disabled().attempts == 1
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_detail_is_bounded_and_plain_text_bodies_are_kept() -> None:
    error = error_for_response(_response(500, text="x" * 5000))
    assert error.detail is not None
    assert len(error.detail) == 500
    assert "POST /acquisitions -> 500" in str(error)


def test_backoff_for_loops_that_never_give_up_has_no_budget() -> None:
    # The ingest flusher waits with it for as long as the backend is down: jittered, capped, no time budget.
    policy = RetryPolicy(wait_initial=0.5, wait_max=10.0, timeout=1.0)
    for failures in range(1, 12):
        wait = policy.backoff(failures)
        assert 0.5 <= wait <= min(10.0, 0.5 * 2 ** (failures - 1))
    assert policy.backoff(3, BackendUnavailableError("x", retry_after=7.0)) == 7.0
    # Within a request's attempts the same wait is cut to what is left of the budget.
    assert policy.compute_wait(10, None, elapsed=0.9) <= 0.1 + 1e-9
