"""Optional bearer-token authentication: the guard, the client-credentials endpoint, expiry (of requests and of
open streams), restarts, the CLI options, and the real ``backend_client`` against it."""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from backend_client import AuthenticationError, ClientCredentialsAuth, SmartEMAPIClient, StaticTokenAuth
from backend_client.models import AcquisitionCreateRequest
from testbed.backend import AuthOptions, BackendServer, Compat, TokenIssuer, create_app
from testbed.backend.auth import EXPIRED, INVALID, MISSING, TokenError
from testbed.cli_backend import register

from .conftest import FAST, SseReader

STATIC = "static-token-1"
AUTH = AuthOptions(static_tokens=(STATIC,), client_id="agent", client_secret="agent-secret")
TOKEN_FORM = {"grant_type": "client_credentials", "client_id": "agent", "client_secret": "agent-secret"}


def _serve(
    factory: pytest.TempPathFactory, compat: Compat, auth: AuthOptions = AUTH
) -> Iterator[BackendServer]:
    with BackendServer(factory.mktemp(compat) / "auth.sqlite3", compat=compat, auth=auth, **FAST) as server:
        yield server


@pytest.fixture(scope="module")
def shared_auth_strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The module's strict backend with auth (reset before each test by ``auth_server``)."""
    yield from _serve(tmp_path_factory, "strict")


@pytest.fixture(scope="module")
def shared_auth_smartem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """The module's smartem backend with auth."""
    yield from _serve(tmp_path_factory, "smartem")


@pytest.fixture(params=["strict", "smartem"])
def auth_server(request: pytest.FixtureRequest) -> BackendServer:
    """A backend with auth (static token and client credentials), emptied, in each mode."""
    server: BackendServer = request.getfixturevalue(f"shared_auth_{request.param}")
    server.reset()
    return server


@pytest.fixture
def strict_auth_server(shared_auth_strict: BackendServer) -> BackendServer:
    """The strict backend with auth, emptied."""
    shared_auth_strict.reset()
    return shared_auth_strict


@pytest.fixture
def http(auth_server: BackendServer) -> Iterator[httpx.Client]:
    """A client without credentials."""
    with httpx.Client(base_url=auth_server.url, timeout=10.0, verify=False) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": detail}
    assert response.headers["www-authenticate"] == "Bearer"


# -- options ---------------------------------------------------------------------------------------------------


def test_auth_options_need_a_way_in_and_consistent_fields() -> None:
    with pytest.raises(ValidationError, match="static_tokens or a client_id"):
        AuthOptions()
    with pytest.raises(ValidationError, match="go together"):
        AuthOptions(client_id="agent")
    with pytest.raises(ValidationError, match="printable ASCII"):
        AuthOptions(static_tokens=("two words",))
    with pytest.raises(ValidationError):
        AuthOptions(static_tokens=("t",), token_lifetime_s=0)
    with pytest.raises(ValidationError, match="extra"):
        AuthOptions(static_tokens=("t",), lifetime=5)  # type: ignore[call-arg]
    assert "agent-secret" not in repr(AUTH)
    assert STATIC not in repr(AUTH)
    assert "agent-secret" not in repr(TokenIssuer(AUTH))
    with pytest.raises(ValueError, match="other auth options"):
        create_app(Path("unused.sqlite3"), auth=AUTH, tokens=TokenIssuer(AuthOptions(static_tokens=("x",))))


def test_issuer_verifies_its_own_tokens_only() -> None:
    now = [1_000.0]
    issuer = TokenIssuer(AuthOptions(client_id="a", client_secret="s", leeway_s=2.0), clock=lambda: now[0])
    token = issuer.issue(10.0)
    assert token.expires_in == 10.0
    assert issuer.verify(token.access_token) == pytest.approx(1_012.0, abs=0.002)  # expiry + leeway
    now[0] = 1_011.0  # past expiry, inside the leeway
    assert issuer.authorize(f"bearer  {token.access_token} ") is not None  # scheme case-insensitive
    now[0] = 1_012.5
    with pytest.raises(TokenError, match=EXPIRED):
        issuer.verify(token.access_token)
    # the same secret gives the same key (tokens survive a process restart); another secret does not
    same = TokenIssuer(AuthOptions(client_id="a", client_secret="s"), clock=lambda: 0.0)
    other = TokenIssuer(AuthOptions(client_id="a", client_secret="other"), clock=lambda: 0.0)
    assert same.verify(token.access_token) is not None
    with pytest.raises(TokenError, match=INVALID):
        other.verify(token.access_token)
    head, _, signature = token.access_token.rpartition(".")
    for forged in (
        head.replace(head.split(".")[1], "9999999999999") + "." + signature,  # a longer life, same signature
        token.access_token[:-2] + "xx",
        "tb1.1.2",
        "",
        "x" * 5000,
    ):
        with pytest.raises(TokenError, match=INVALID):
            same.verify(forged)
    with pytest.raises(ValueError, match="> 0"):
        issuer.issue(0)


# -- the guard -------------------------------------------------------------------------------------------------


def test_every_route_needs_a_token_except_the_exempt_ones(
    auth_server: BackendServer, http: httpx.Client
) -> None:
    for path in ("/health", "/status", "/openapi.json", "/docs", "/testbed/counts", "/testbed/instructions"):
        assert http.get(path).status_code == 200, path
    assert http.get("/status").json()["configuration"]["auth"] == "bearer"
    for method, path in (
        ("GET", "/acquisitions"),
        ("POST", "/acquisitions"),
        ("GET", "/grids/nope"),
        ("POST", "/debug/sessions/create"),
        ("GET", "/debug/sessions"),
        ("GET", "/agent/a/session/s/instructions/stream"),
        ("POST", "/agent/a/session/s/instructions/i/ack"),
        ("POST", "/agent/a/session/s/heartbeat"),
        ("GET", "/redoc"),  # exempt in SmartEM's code, not on the running backend
    ):
        _refused(http.request(method, path, json={}), MISSING)
    for header in ("Basic YTpi", "Bearer", "Bearer two tokens", STATIC, "Token " + STATIC):
        _refused(http.get("/acquisitions", headers={"Authorization": header}), MISSING)
    _refused(http.get("/acquisitions", headers=_bearer("not-a-token")), INVALID)
    _refused(http.get("/acquisitions", headers=_bearer(STATIC + "x")), INVALID)
    assert http.get("/acquisitions", headers=_bearer(STATIC)).json() == []
    issued = http.post("/auth/token", data=TOKEN_FORM).json()["access_token"]
    created = http.post("/acquisitions", json={"uuid": "a", "name": "n"}, headers=_bearer(issued))
    assert created.status_code == 201
    assert auth_server.counts()["acquisition"] == 1
    # a refused request does nothing
    _refused(http.post("/acquisitions", json={"uuid": "b", "name": "n"}), MISSING)
    assert auth_server.counts()["acquisition"] == 1


def test_expired_token_is_refused(auth_server: BackendServer, http: httpx.Client) -> None:
    token = auth_server.issue_token(0.2)
    assert http.get("/acquisitions", headers=_bearer(token)).status_code == 200
    time.sleep(0.25)
    _refused(http.get("/acquisitions", headers=_bearer(token)), EXPIRED)
    # the convenience methods keep working: they mint their own tokens
    assert auth_server.create_session("agent-1")


def test_injected_faults_answer_before_auth(strict_auth_server: BackendServer) -> None:
    strict_auth_server.fail_next(1, status=503, retry_after=None)
    with httpx.Client(base_url=strict_auth_server.url, verify=False) as http:
        assert http.get("/acquisitions").status_code == 503  # the "proxy" fails first
        _refused(http.get("/acquisitions"), MISSING)


# -- the token endpoint ----------------------------------------------------------------------------------------


def test_token_endpoint(auth_server: BackendServer, http: httpx.Client) -> None:
    response = http.post("/auth/token", data=TOKEN_FORM)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert response.headers["cache-control"] == "no-store"
    assert http.get("/acquisitions", headers=_bearer(body["access_token"])).status_code == 200
    # the client may authenticate with HTTP Basic instead of form fields (RFC 6749 section 2.3.1)
    basic = base64.b64encode(b"agent:agent-secret").decode()
    response = http.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200
    assert response.json()["access_token"] != body["access_token"]

    def error(data: Any = None, **kwargs: Any) -> tuple[int, str]:
        answer = http.post("/auth/token", data=data, **kwargs)
        return answer.status_code, answer.json()["error"]

    assert error({**TOKEN_FORM, "client_secret": "wrong"}) == (401, "invalid_client")
    assert error({**TOKEN_FORM, "client_id": "other"}) == (401, "invalid_client")
    assert error({"grant_type": "client_credentials", "client_id": "agent"}) == (401, "invalid_client")
    assert error({**TOKEN_FORM, "grant_type": "password"}) == (400, "unsupported_grant_type")
    assert error({"client_id": "agent", "client_secret": "agent-secret"}) == (400, "invalid_request")
    assert error(json=TOKEN_FORM) == (400, "invalid_request")  # a form, not JSON
    wrong = http.post("/auth/token", data={**TOKEN_FORM, "client_secret": "wrong"})
    assert "agent-secret" not in wrong.text


def test_static_tokens_only_backend_has_no_clients(tmp_path: Path) -> None:
    auth = AuthOptions(static_tokens=("a", "b"))
    with BackendServer(tmp_path / "s.sqlite3", auth=auth, **FAST) as server:
        with httpx.Client(base_url=server.url, verify=False) as http:
            assert http.post("/auth/token", data=TOKEN_FORM).status_code == 401
            for token in ("a", "b"):
                assert http.get("/acquisitions", headers=_bearer(token)).status_code == 200
        assert server.auth_headers() == _bearer("a")


def test_tokens_survive_a_restart(tmp_path: Path) -> None:
    server = BackendServer(tmp_path / "r.sqlite3", auth=AUTH, **FAST).start()
    try:
        with httpx.Client(base_url=server.url, verify=False) as http:
            token = http.post("/auth/token", data=TOKEN_FORM).json()["access_token"]
        server.restart()
        with httpx.Client(base_url=server.url, verify=False) as http:
            assert http.get("/acquisitions", headers=_bearer(token)).status_code == 200
    finally:
        server.stop()


def test_open_backend_is_unchanged(strict_server: BackendServer, client: httpx.Client) -> None:
    assert client.get("/acquisitions").status_code == 200
    assert client.post("/auth/token", data=TOKEN_FORM).status_code == 404  # no token endpoint
    assert client.get("/status").json()["configuration"]["auth"] == "none"
    assert strict_server.auth_headers() == {}
    with pytest.raises(RuntimeError, match="without auth"):
        strict_server.issue_token()


# -- open streams and expiry -----------------------------------------------------------------------------------


def _reader(server: BackendServer, session: str, token: str) -> SseReader:
    reader = SseReader(
        server.url, f"/agent/agent-1/session/{session}/instructions/stream", headers=_bearer(token)
    )
    assert reader.status_code == 200
    return reader


def _close_reasons(server: BackendServer, session: str) -> list[str | None]:
    with httpx.Client(base_url=server.url, verify=False) as http:
        rows = http.get("/testbed/connections", params={"session_id": session}).json()
    return [row["close_reason"] for row in rows]


def test_stream_ends_when_its_token_expires(strict_auth_server: BackendServer) -> None:
    server = strict_auth_server
    session = server.create_session("agent-1")
    lifetime = 1.0  # long enough to connect and deliver on a loaded machine
    started = time.monotonic()
    expiring = _reader(server, session, server.issue_token(lifetime))
    try:
        expiring.next_event("connection")
        iid = server.create_instruction(session, "before.expiry")
        assert expiring.next_event("instruction").json()["instruction_id"] == iid
        expiring.wait_closed(timeout=5.0)
        assert time.monotonic() - started >= lifetime
        assert _close_reasons(server, session) == ["token_expired"]
    finally:
        expiring.close()
    # a static token never expires: that stream outlives the lifetime above and keeps delivering
    static = _reader(server, session, STATIC)
    try:
        assert static.next_event("instruction").json()["instruction_id"] == iid  # unacknowledged: re-sent
        time.sleep(lifetime + 0.2)
        later = server.create_instruction(session, "after.expiry")
        assert static.next_event("instruction").json()["instruction_id"] == later
        reasons = _close_reasons(server, session)
        assert len(reasons) == 2
        assert set(reasons) == {"token_expired", None}  # the static stream's row is still open
    finally:
        static.close()


def test_streams_outlive_tokens_when_told_to(tmp_path: Path) -> None:
    auth = AuthOptions(client_id="agent", client_secret="agent-secret", end_streams_on_expiry=False)
    with BackendServer(tmp_path / "k.sqlite3", auth=auth, **FAST) as server:
        session = server.create_session("agent-1")
        reader = _reader(server, session, server.issue_token(0.3))
        try:
            reader.next_event("connection")
            time.sleep(0.4)
            iid = server.create_instruction(session, "after.expiry")
            assert reader.next_event("instruction").json()["instruction_id"] == iid
        finally:
            reader.close()


# -- the real client -------------------------------------------------------------------------------------------


def test_smartem_api_client_with_static_token(auth_server: BackendServer) -> None:
    with SmartEMAPIClient(auth_server.url, auth=StaticTokenAuth(STATIC)) as api:
        assert api.get_status().status == "ok"
        assert (
            api.create_acquisition_request(AcquisitionCreateRequest(uuid="acq-1", name="n")).uuid == "acq-1"
        )
        assert api.get_entity("acquisition", "acq-1")["name"] == "n"
    with SmartEMAPIClient(auth_server.url) as anonymous:
        assert anonymous.get_status().status == "ok"  # exempt
        with pytest.raises(AuthenticationError) as refused:
            anonymous.get_entity("acquisition", "acq-1")
        assert refused.value.status_code == 401
        with pytest.raises(AuthenticationError):
            anonymous.create_acquisition_request(AcquisitionCreateRequest(uuid="acq-2", name="n"))
    with (
        SmartEMAPIClient(auth_server.url, auth=StaticTokenAuth("wrong")) as wrong,
        pytest.raises(AuthenticationError),
    ):
        wrong.get_entity("acquisition", "acq-1")
    assert auth_server.counts()["acquisition"] == 1


def test_smartem_api_client_with_client_credentials(auth_server: BackendServer) -> None:
    token_url = f"{auth_server.url}/auth/token"
    auth = ClientCredentialsAuth(token_url, "agent", "agent-secret")
    bad = ClientCredentialsAuth(token_url, "agent", "wrong-secret")
    try:
        with SmartEMAPIClient(auth_server.url, auth=auth) as api:
            api.create_acquisition_request(AcquisitionCreateRequest(uuid="acq-1", name="n"))
            assert api.get_entity("acquisition", "acq-1")["uuid"] == "acq-1"
        assert auth.fetch_count == 1  # one token for both calls
        with (
            SmartEMAPIClient(auth_server.url, auth=bad) as api,
            pytest.raises(AuthenticationError) as refused,
        ):
            api.get_entity("acquisition", "acq-1")
        assert "wrong-secret" not in str(refused.value)
    finally:
        auth.close()  # the auth's own token client
        bad.close()


# -- CLI ---------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="em-agent testbed")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_auth_options(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.cli_backend import _auth_options

    parser = _parser()
    args = parser.parse_args(["backend", "--token", "t1", "--token", "t2"])
    assert _auth_options(args) == AuthOptions(static_tokens=("t1", "t2"))
    args = parser.parse_args(
        [
            "backend",
            "--client-id",
            "agent",
            "--client-secret",
            "s3",
            "--token-lifetime",
            "60",
            "--token-leeway",
            "5",
        ]
    )
    assert _auth_options(args) == AuthOptions(
        client_id="agent", client_secret="s3", token_lifetime_s=60, leeway_s=5
    )
    args = parser.parse_args(["backend", "--token", "t", "--keep-streams-on-expiry"])
    options = _auth_options(args)
    assert options is not None
    assert not options.end_streams_on_expiry
    assert _auth_options(parser.parse_args(["backend"])) is None
    # contradictory options: exit 2 before serving anything, and the secret is never echoed
    args = parser.parse_args(["backend", "--client-secret", "hunter2", "--port", "1"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "client_id and client_secret go together" in err
    assert "hunter2" not in err
    args = parser.parse_args(["backend", "--token", "t", "--token-lifetime", "0", "--port", "1"])
    assert args.func(args) == 2


def test_cli_instruct_with_token(
    strict_auth_server: BackendServer, capsys: pytest.CaptureFixture[str]
) -> None:
    session = strict_auth_server.create_session("agent-1")
    parser = _parser()
    base = ["instruct", "x.y", "--backend", strict_auth_server.url, "--session-id", session]
    args = parser.parse_args(base)
    assert args.func(args) == 1
    assert "pass --token" in capsys.readouterr().err
    args = parser.parse_args([*base, "--token", STATIC])
    assert args.func(args) == 0
    assert strict_auth_server.instructions(session)[0]["instruction_type"] == "x.y"
