"""The Semphony HTTP backend's error translation, with httpx.MockTransport (the real path is in test_sdk)."""

from __future__ import annotations

import httpx
import pytest

from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException
from agent.devices.http_backend import SemphonyHttpBackend
from agent.devices.semphony import SemphonyClient

KEY = "s3cret-token"


def backend(handler: httpx.MockTransport) -> SemphonyHttpBackend:
    return SemphonyHttpBackend("http://semphony.test/", KEY, transport=handler)


async def test_sends_bearer_token_and_json() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 3, "name": "r", "status": "pending"})

    async with backend(httpx.MockTransport(handle)) as http:
        assert (await http.create_run("r"))["id"] == 3
        await http.invoke(3, 4, "Stage Get/Position", {"a": 1})
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].url.path == "/api/runs"
    assert seen[1].url.raw_path == b"/api/runs/3/sessions/4/commands/Stage%20Get%2FPosition"


async def test_login_redirect_and_html_are_errors() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/login"})

    async with backend(httpx.MockTransport(redirect)) as http:
        with pytest.raises(SemphonyApiError) as err:
            await http.get_run(1)
    assert err.value.status_code == 302

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})

    async with backend(httpx.MockTransport(html)) as http:
        with pytest.raises(SemphonyApiError, match="expected JSON"):
            await http.get_run(1)


async def test_status_codes_and_guardrails_are_translated() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("Vent"):
            detail = {"guardrail_type": "beam_on_during_vent", "details": {"beam_on": True}}
            return httpx.Response(422, json={"detail": detail})
        if request.url.path.endswith("Acquire"):
            return httpx.Response(504, json={"detail": "device timeout"})
        return httpx.Response(422, json={"detail": [{"loc": ["body"], "msg": "bad"}]})

    async with backend(httpx.MockTransport(handle)) as http:
        with pytest.raises(SemphonyGuardrailException) as guard:
            await http.invoke(1, 2, "Vent")
        assert guard.value.details == {"beam_on": True}
        with pytest.raises(SemphonyApiError) as timeout:
            await http.invoke(1, 2, "Acquire")
        assert timeout.value.status_code == 504
        assert "device timeout" in str(timeout.value)
        with pytest.raises(SemphonyApiError) as invalid:
            await http.invoke(1, 2, "Pump")
        assert invalid.value.status_code == 422


async def test_unreachable_server_and_no_key_in_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with backend(httpx.MockTransport(refuse)) as http:
        with pytest.raises(SemphonyApiError) as err:
            await http.create_session(1)
    assert err.value.status_code is None
    assert KEY not in str(err.value)


def test_bad_base_url() -> None:
    with pytest.raises(ValueError):
        SemphonyHttpBackend("semphony.test", KEY)


def test_sdk_download_over_mock() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/images/img-7"
        return httpx.Response(200, content=b"\x89PNG-bytes")

    with SemphonyClient("http://semphony.test", KEY, transport=httpx.MockTransport(handle)) as client:
        assert client.base_url == "http://semphony.test"
        assert client.download_image("img-7") == b"\x89PNG-bytes"
