"""The wire protocol module: the testbed server serves exactly its routes, and its error encodings round-trip
through the real HTTP client (a 501 'cannot express' included)."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.routing import APIRoute

from agent.devices.capabilities import Capability
from agent.devices.errors import SemphonyApiError, SemphonyGuardrailException, SemphonyUnsupportedError
from agent.devices.semphony import ImagingDevice, SemphonyClient
from agent.devices.semphony_protocol import ASSUMED, REFERENCE, ROUTES, Route, error_from_response
from agent.devices.simulator import SimulatedControlServer, SimulatorConfig
from testbed.semphony_server import SemphonyServer
from testbed.semphony_server.app import create_app


def every_route() -> list[Route]:
    return [getattr(ROUTES, f.name) for f in dataclasses.fields(ROUTES)]


def test_the_testbed_server_serves_every_protocol_route_with_its_method() -> None:
    app = create_app(SimulatedControlServer(), api_key="k")
    served = {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    for route in every_route():
        assert (route.method, route.template) in served, route


def test_only_the_command_route_and_one_capability_come_from_the_reference() -> None:
    assert [r.template for r in every_route() if r.source == REFERENCE] == [
        "/api/runs/{run_id}/sessions/{session_id}/commands/{capability_id}"
    ]
    assert {r.source for r in every_route()} == {REFERENCE, ASSUMED}
    assert (
        ROUTES.invoke.path(run_id=1, session_id=2, capability_id="a/b")
        == "/api/runs/1/sessions/2/commands/a%2Fb"
    )


def test_error_encodings() -> None:
    guard = error_from_response(
        "x", 422, {"guardrail_type": "fov_range", "details": {"v": 1}}, "Unprocessable"
    )
    assert isinstance(guard, SemphonyGuardrailException)
    assert guard.details == {"v": 1}
    unsupported = error_from_response("x", 501, {"message": "no", "reason": "why"}, "Not Implemented")
    assert isinstance(unsupported, SemphonyUnsupportedError)
    assert unsupported.reason == "why"
    assert isinstance(error_from_response("x", 501, "plain", "Not Implemented"), SemphonyUnsupportedError)
    other = error_from_response("x", 409, "busy", "Conflict")
    assert type(other) is SemphonyApiError
    assert other.status_code == 409


def test_a_declined_capability_crosses_http_as_unsupported_with_its_reason() -> None:
    with SemphonyServer(config=SimulatorConfig(time_factor=0.0)) as server:
        server.core.declined_capabilities[Capability.AWAIT_HUMAN] = "no operator here"
        with SemphonyClient(server.url, server.api_key) as client:
            session = client.run("declines").session().start()
            sem = ImagingDevice(client, device_slug="sem-001")
            sem.attach(session)
            with pytest.raises(SemphonyUnsupportedError) as err:
                sem.imaging.await_human("hello")
    assert err.value.status_code == 501
    assert err.value.reason == "no operator here"
