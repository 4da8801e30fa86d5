"""``BackendServer``: the testbed backend on 127.0.0.1 in a background thread, for tests, demos and
benchmarks.

The server binds its own socket (so ``port`` is known before the first request, and port 0 picks a free one),
runs uvicorn on it in a daemon thread, and can be stopped and started again on the same port with the same
SQLite file: the restart keeps every entity, session and instruction.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from testbed.backend.app import create_app
from testbed.backend.auth import TokenIssuer
from testbed.backend.faults import FaultInjector
from testbed.backend.options import BackendOptions, Compat
from testbed.backend.state import BackendState

HOST = "127.0.0.1"


def _uvicorn_config(app: Any, *, port: int = 0, host: str = HOST) -> uvicorn.Config:
    # log_config=None: do not rewire the host process's logging; ws="none": no websocket stack (and none of
    # its deprecation warnings); a short graceful timeout cancels streams that outlive the shutdown.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        ws="none",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )


class BackendServer:
    """The testbed backend served over HTTP on 127.0.0.1.

    ``BackendServer(db_path, port=0, compat="strict", heartbeat_interval=..., auth=AuthOptions(...), ...)``:
    keyword options are those of :func:`~testbed.backend.app.create_app`. Use as a context manager or call
    :meth:`start` / :meth:`stop`. Fault injection methods act immediately and are safe to call from any thread.
    With ``auth``, tokens issued before a restart stay valid after it, and the convenience methods
    (:meth:`create_session`, ...) authenticate themselves.
    """

    def __init__(
        self, db_path: str | Path, *, port: int = 0, compat: Compat = "strict", **options: Any
    ) -> None:
        self.db_path = Path(db_path)
        self.options = BackendOptions(compat=compat, **options)
        self.faults = FaultInjector()
        self.tokens = TokenIssuer(self.options.auth) if self.options.auth is not None else None
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        # One keep-alive client for the convenience methods: building an httpx.Client loads the CA bundle
        # (tens of ms), which would dominate the cost of a helper call. The lock makes it safe from any thread.
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self._state: BackendState | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after the first start; the requested one before)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> BackendServer:
        """Start serving (same port as before after a restart); returns ``self`` once requests are
        accepted."""
        if self.running:
            raise RuntimeError("backend server already running")
        # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY on accepted sockets only when the listening
        # socket says TCP; without it every response pays a 40 ms Nagle / delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        # Field values as they are (not model_dump()), so nested option models pass through unchanged.
        options = {name: getattr(self.options, name) for name in BackendOptions.model_fields}
        app = create_app(self.db_path, faults=self.faults, tokens=self.tokens, **options)
        self._state = app.state.backend
        server = uvicorn.Server(_uvicorn_config(app, port=self._port))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"testbed-backend-{self._port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout=5)
                sock.close()
                self._server = self._thread = None
                raise RuntimeError(f"testbed backend failed to start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: end open streams, shut uvicorn down, close the database (kept on disk)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._call_on_loop(lambda state: state.hub.end_all("shutdown"))
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None
        self._state = None
        with self._http_lock:
            if self._http is not None:
                self._http.close()  # its connections went with the server
                self._http = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same database."""
        self.stop()
        self.start()

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call_on_loop(self, fn: Any) -> Any:
        """Run ``fn(state)`` on the server's event loop (the stream hub lives there); ``None`` if not
        running."""
        state = self._state
        loop = state.loop if state is not None else None
        if state is None or loop is None or loop.is_closed():
            return None

        async def call() -> Any:
            return fn(state)

        try:
            return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=5)
        except RuntimeError:
            # The loop closed between the check and the call: nothing left to act on.
            return None

    def reset(self, timeout: float = 10.0) -> dict[str, int]:
        """Empty the running backend as if its database were new (``POST /testbed/reset``): open streams
        end, faults are cleared, every row is deleted and id counters restart. Lets tests share one server
        and still start each from a clean state. Returns ``{ended_streams, deleted_rows}``."""
        state = self._state
        loop = state.loop if state is not None else None
        if state is None or loop is None or loop.is_closed():
            raise RuntimeError("backend server is not running")
        return asyncio.run_coroutine_threadsafe(state.reset(), loop).result(timeout=timeout)

    # -- fault injection -------------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        *,
        status: int = 503,
        retry_after: float | None = 1.0,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (outside ``/testbed/``) with ``status`` and ``Retry-After``."""
        self.faults.fail_next(count, status=status, retry_after=retry_after, path_prefix=path_prefix)

    def add_latency(self, seconds: float, *, path_prefix: str | None = None) -> None:
        """Delay every request (outside ``/testbed/``) by ``seconds``; 0 removes the delay."""
        self.faults.add_latency(seconds, path_prefix=path_prefix)

    def clear_faults(self) -> None:
        """Remove injected failures and latency."""
        self.faults.clear()

    def drop_streams(self, session_id: str | None = None) -> int:
        """End every open SSE stream (or one session's) now; returns how many were ended."""
        if session_id is None:
            result = self._call_on_loop(lambda state: state.hub.end_all("dropped_by_fault"))
        else:
            result = self._call_on_loop(lambda state: state.hub.end_session(session_id, "dropped_by_fault"))
        return int(result or 0)

    # -- authentication --------------------------------------------------------------------------------------

    def issue_token(self, lifetime_s: float | None = None) -> str:
        """A bearer token as ``POST /auth/token`` would issue it (valid for ``lifetime_s``, default the
        configured lifetime), without the HTTP round trip. Raises ``RuntimeError`` when auth is off."""
        if self.tokens is None:
            raise RuntimeError("this backend runs without auth: construct it with auth=AuthOptions(...)")
        return self.tokens.issue(lifetime_s).access_token

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for a request to this server (empty when auth is off)."""
        if self.tokens is None:
            return {}
        static = self.tokens.options.static_tokens
        return {"Authorization": f"Bearer {static[0] if static else self.issue_token()}"}

    # -- conveniences over HTTP (for tests and the demo) -----------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = self.auth_headers()
        with self._http_lock:
            if self._http is None:
                # Plain HTTP on loopback: no TLS, so no CA bundle to load.
                self._http = httpx.Client(base_url=self.url, timeout=10.0, verify=False)  # noqa: S501
            response = self._http.request(method, path, headers=headers, **kwargs)
        response.raise_for_status()
        return response.json()

    def create_session(
        self,
        agent_id: str,
        *,
        session_id: str | None = None,
        acquisition_uuid: str | None = None,
        name: str = "test",
    ) -> str:
        """Create an active agent session (``POST /debug/sessions/create``) and return its id."""
        body: dict[str, Any] = {"agent_id": agent_id, "name": name}
        if session_id is not None:
            body["session_id"] = session_id
        if acquisition_uuid is not None:
            body["acquisition_uuid"] = acquisition_uuid
        return str(self._request("POST", "/debug/sessions/create", json=body)["session_id"])

    def create_instruction(
        self,
        session_id: str,
        instruction_type: str,
        payload: Any = None,
        *,
        priority: str = "normal",
        sequence_number: int | None = None,
        expires_in: float | None = 3600.0,
        metadata: dict[str, Any] | None = None,
        instruction_id: str | None = None,
    ) -> str:
        """Create an instruction (``POST /debug/session/{id}/create-instruction``); ``expires_in`` in seconds
        (``None``: never expires). Returns the instruction id."""
        body: dict[str, Any] = {
            "instruction_type": instruction_type,
            "payload": {} if payload is None else payload,
            "priority": priority,
            "sequence_number": sequence_number,
            "expires_in_minutes": None if expires_in is None else expires_in / 60.0,
            "metadata": metadata or {},
        }
        if instruction_id is not None:
            body["instruction_id"] = instruction_id
        return str(
            self._request("POST", f"/debug/session/{session_id}/create-instruction", json=body)[
                "instruction_id"
            ]
        )

    def instructions(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Instruction history with deliveries, acknowledgements and lifecycle (``GET
        /testbed/instructions``)."""
        params = {"session_id": session_id} if session_id else {}
        result: list[dict[str, Any]] = self._request("GET", "/testbed/instructions", params=params)
        return result

    def counts(self, acquisition_uuid: str | None = None) -> dict[str, int]:
        """Entity counts by kind (``GET /testbed/counts``)."""
        params = {"acquisition_uuid": acquisition_uuid} if acquisition_uuid else {}
        result: dict[str, int] = self._request("GET", "/testbed/counts", params=params)
        return result

    def acquisition_entities(self, acquisition_uuid: str) -> dict[str, Any]:
        """Every entity of one acquisition with its fields (``GET /testbed/acquisitions/{uuid}/entities``)."""
        result: dict[str, Any] = self._request("GET", f"/testbed/acquisitions/{acquisition_uuid}/entities")
        return result

    def sweep(self) -> dict[str, Any]:
        """Run the housekeeping pass (expiry, stale connections, idle sessions) now."""
        result: dict[str, Any] = self._request("POST", "/testbed/sweep")
        return result


def serve(
    db_path: str | Path, *, port: int = 8000, host: str = HOST, compat: Compat = "strict", **options: Any
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (the ``em-agent testbed backend`` command)."""
    app = create_app(db_path, compat=compat, **options)
    uvicorn.Server(_uvicorn_config(app, port=port, host=host)).run()


__all__ = ["BackendServer", "serve"]
