"""The Semphony-compatible control server: auth, fault injection, test reads, prompts, restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from agent.devices.semphony import ImagingDevice, SemphonyClient
from agent.devices.simulator import SimulatorConfig
from testbed.semphony_server import SemphonyServer


@pytest.fixture
def server() -> Iterator[SemphonyServer]:
    with SemphonyServer(config=SimulatorConfig(time_factor=0.0, human_auto_continue=False)) as srv:
        yield srv


def test_requires_the_api_key(server: SemphonyServer) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.post(server.url + "/api/runs", json={"name": "x"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(server.url + "/api/runs", json={"name": "x"}, headers=wrong).status_code == 401
    with SemphonyClient(server.url, "nope") as client, pytest.raises(Exception, match="401"):
        client.run("x")


def test_faults_actions_and_truth_endpoints(server: SemphonyServer) -> None:
    auth = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=auth) as http:
        assert http.post("/testbed/faults", json={"acquire_timeouts": 2}).json()["acquire_timeouts"] == 2
        assert http.post("/testbed/faults", json={"acquire_timeouts": -1}).status_code == 422
        run = http.post("/api/runs", json={"name": "r"}).json()
        session = http.post(f"/api/runs/{run['id']}/sessions").json()
        http.post(f"/api/runs/{run['id']}/sessions/{session['id']}/devices", json={"device_slug": "sem-001"})
        command = f"/api/runs/{run['id']}/sessions/{session['id']}/commands/"
        assert http.post(command + "StageMoveTo", json={"x": 1.0, "y": 0.5}).status_code == 200
        assert http.post(command + "Acquire", json={"width": 32, "height": 32}).status_code == 504
        actions = http.get("/testbed/actions").json()
        assert actions["counts"] == {"StageMoveTo": 1}
        assert actions["log"][0]["params"]["x"] == 1.0
        truth = http.get("/testbed/truth").json()
        assert truth["true_focus_wd_mm"] == pytest.approx(server.simulator.true_focus_wd_mm())


def test_await_human_waits_for_the_operator(server: SemphonyServer) -> None:
    with SemphonyClient(server.url, server.api_key) as client:
        session = client.run("human").session().start()
        sem = ImagingDevice(client, device_slug="sem-001")
        sem.attach(session)
        answers: list[dict[str, object]] = []
        waiter = threading.Thread(target=lambda: answers.append(sem.imaging.await_human("insert grid")))
        waiter.start()
        auth = {"Authorization": f"Bearer {server.api_key}"}
        prompts: list[dict[str, object]] = []
        for _ in range(200):
            prompts = httpx.get(server.url + "/api/prompts", headers=auth).json()
            if prompts:
                break
            threading.Event().wait(0.01)
        assert prompts[0]["message"] == "insert grid"
        assert not answers
        reply = httpx.post(f"{server.url}/api/prompts/{prompts[0]['prompt_id']}/continue", headers=auth)
        assert reply.status_code == 200
        waiter.join(5)
        assert answers[0]["operator"] == "operator"
        assert httpx.post(f"{server.url}/api/prompts/999/continue", headers=auth).status_code == 404


def test_restart_keeps_simulator_state(server: SemphonyServer) -> None:
    with SemphonyClient(server.url, server.api_key) as client:
        session = client.run("restart").session().start()
        sem = ImagingDevice(client, device_slug="sem-001")
        sem.attach(session)
        sem.stage.move_to(2.0, 3.0)
        url = server.url
        server.stop()
        server.start()
        assert server.url == url
        assert sem.stage.get_pos()["x"] == 2.0
        assert server.action_counts() == {"StageMoveTo": 1}
