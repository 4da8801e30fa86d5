"""``SSEAgentClient``: the agent's instruction stream, acknowledgements and heartbeats.

The stream (``GET /agent/{agent_id}/session/{session_id}/instructions/stream``, httpx-sse) is kept open for as
long as the caller wants it:

* every drop (server restart, network error, silence longer than ``read_timeout``, 5xx) is followed by a
reconnect
  after ``uniform(base, min(max_retry_delay, base * 2**(n-1)))`` seconds (full jitter), where ``base`` is
  ``initial_retry_delay`` or the server's ``retry:`` hint and ``n`` counts consecutive failed attempts; a
  healthy connection (one that delivered an event) resets ``n``;
* it gives up after ``max_retries`` consecutive failures (``None``: never), raising
  :class:`~backend_client.errors.BackendUnavailableError`;
* a session that cannot work (``error`` event ``session_validation_failed``, HTTP 403/404) raises
  :class:`~backend_client.errors.SessionError` at once instead of reconnecting in a loop;
* ``Last-Event-ID`` is sent when events carried ids (SmartEM's do not; the testbed's strict mode does);
* a 401 makes the auth (``ClientCredentialsAuth``) refresh its token and resend once; tokens expiring while
the
  stream is open are refreshed on the next connect.

SmartEM sends ``: ping`` comments every 15 s and a ``heartbeat`` event after 30 s idle, so the default read
timeout (45 s) never cuts a healthy stream. :meth:`SSEAgentClient.stop` is thread-safe and interrupts a
blocked read or a backoff sleep promptly; it never interrupts a callback.

Acknowledgements follow SmartEM's observed behaviour: the body carries only the five contract fields; a
repeated ack (400 "invalid status") means the instruction is already acknowledged; an ack sent while the
stream is down waits for the reconnect; an ack that keeps failing with 500 stops after ``retry_count``
attempts and reports ``unconfirmed`` (see :class:`~backend_client.models.AckResult`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse
from pydantic import TypeAdapter, ValidationError

from backend_client import _operations as ops
from backend_client import paths
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.auth import ClientCredentialsAuth
from backend_client.client import SmartEMAPIClient
from backend_client.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
    SessionError,
    error_for_response,
    map_transport_errors,
)
from backend_client.models import (
    AckResult,
    AckStatus,
    AgentInstructionAcknowledgement,
    AgentInstructionAcknowledgementResponse,
    ConnectionEvent,
    ErrorEvent,
    HeartbeatEvent,
    InstructionEvent,
    StreamEvent,
)
from backend_client.retry import RetryPolicy, backoff_delay

DEFAULT_READ_TIMEOUT = 45.0
"""Longer than SmartEM's 15 s ping period and 30 s heartbeat period: only a dead stream stays silent that
long."""
DEFAULT_ACK_CONNECT_WAIT = 60.0
"""How long an ack waits for the stream to come back before posting anyway, seconds."""

_EVENTS: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
_SESSION_ERRORS = frozenset({"session_validation_failed"})

Callback = Callable[[Any], Any]


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class _Stopped(Exception):
    """Internal: the stream was stopped while waiting."""


class AgentHeartbeatSender:
    """Posts ``.../heartbeat`` every ``interval`` seconds while ``is_connected()`` is true.

    SmartEM answers 404 when it sees no active SSE connection (e.g. just after a server restart); that is
    tolerated and counted, not treated as a failure. Other errors are counted and kept in ``last_error``; the
    next beat is the retry.
    """

    def __init__(
        self,
        client: AsyncSmartEMAPIClient,
        agent_id: str,
        session_id: str,
        *,
        interval: float = 60.0,
        is_connected: Callable[[], bool] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self._client = client
        self.agent_id = agent_id
        self.session_id = session_id
        self.interval = interval
        self._is_connected = is_connected or (lambda: True)
        self._log = logger or logging.getLogger("backend_client.heartbeat")
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.not_connected = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True while the periodic task runs."""
        return self._task is not None and not self._task.done()

    async def beat(self) -> bool:
        """Send one heartbeat; True if the backend accepted it, False on 404 or an error."""
        try:
            await self._client.send_heartbeat(self.agent_id, self.session_id)
        except NotFoundError:
            self.not_connected += 1
            self._log.debug("heartbeat: backend sees no active connection (404)")
            return False
        except BackendError as exc:
            self.failures += 1
            self.last_error = str(exc)
            self._log.warning("heartbeat failed", extra={"event": "sse.heartbeat_failed", "error": str(exc)})
            return False
        self.sent += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._is_connected():
                await self.beat()

    async def start(self) -> None:
        """Start the periodic task (raises if already running)."""
        if self.running:
            raise RuntimeError("AgentHeartbeatSender already running")
        self._task = asyncio.create_task(self._run(), name="em-agent-heartbeat")

    async def stop(self) -> None:
        """Stop the periodic task (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Not suppress(CancelledError): that would also swallow a cancellation of the caller.
            await asyncio.wait({task})


async def _abandon(work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` and let it unwind before the caller closes the connection it reads from.

    Bounded, so a read that ignores cancellation cannot hold up a stop; not ``suppress(BaseException)``, so a
    cancellation of the calling task still propagates. Its outcome is retrieved: the read is being abandoned.
    """
    work.cancel()
    await asyncio.wait({work}, timeout=1.0)
    if work.done() and not work.cancelled():
        work.exception()


class SSEAgentClient:
    """SSE client of one agent session: instruction stream with reconnects, acknowledgements, heartbeats.

    Args:
        base_url: backend root URL.
        agent_id: this agent's id.
        session_id: the agent session (pre-created on the backend).
        timeout: connect timeout of the stream, and timeout of acks and heartbeats, seconds.
        max_retries: consecutive failed connection attempts before giving up; ``None`` retries forever
        (daemon). initial_retry_delay: first reconnect delay, seconds (the server's ``retry:`` overrides it).
        max_retry_delay: cap of one reconnect delay, seconds.
        auth: ``httpx.Auth`` for every request (token refreshed by ``ClientCredentialsAuth``).
        transport: async transport (tests inject ``httpx.MockTransport``).
        sync_transport: sync transport for :meth:`acknowledge_instruction` (defaults to ``transport`` when
        that
            object also implements the sync interface, as ``MockTransport`` does).
        read_timeout: silence (no byte, not even a ping) after which the stream is considered dead, seconds.
        heartbeat_interval: if set, POST a heartbeat this often while connected.
        ack_connect_wait: how long an ack waits for a reconnect when the stream is down, seconds.
        ack_retry_delay: first backoff between ack attempts, seconds (0 in tests).
        logger: logger (defaults to ``backend_client.sse``).
        verify: TLS verification.
        rng: random source for jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        base_url: str,
        agent_id: str,
        session_id: str,
        timeout: float = 30,
        max_retries: int | None = 10,
        initial_retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
        read_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        ack_connect_wait: float = DEFAULT_ACK_CONNECT_WAIT,
        ack_retry_delay: float = 1.0,
        logger: logging.Logger | None = None,
        verify: bool | str = True,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be >= 0 or None (forever)")
        if initial_retry_delay < 0 or max_retry_delay < initial_retry_delay:
            raise ValueError("need 0 <= initial_retry_delay <= max_retry_delay")
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id
        self.session_id = session_id
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.initial_retry_delay = initial_retry_delay
        self.max_retry_delay = max_retry_delay
        self.read_timeout = (
            read_timeout if read_timeout is not None else max(DEFAULT_READ_TIMEOUT, self.timeout)
        )
        self.heartbeat_interval = heartbeat_interval
        self.ack_connect_wait = ack_connect_wait
        self.ack_retry_delay = ack_retry_delay
        self.logger = logger or logging.getLogger("backend_client.sse")
        self._auth = auth
        self._transport = transport
        if sync_transport is None and isinstance(transport, httpx.BaseTransport):
            sync_transport = transport
        self._sync_transport = sync_transport
        self._verify = verify
        self._rng = rng or random.Random()
        self._stream_path = paths.build(paths.AGENT_STREAM, agent_id=agent_id, session_id=session_id)

        # State shared with other threads (stop(), acks from worker threads): events and plain attributes
        # only.
        self._connected = threading.Event()
        self._stop_requested = threading.Event()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None
        self._sync_api: SmartEMAPIClient | None = None
        self._sync_api_lock = threading.Lock()
        self._async_api: AsyncSmartEMAPIClient | None = None
        self._async_api_loop: asyncio.AbstractEventLoop | None = None

        self.connection_id: str | None = None
        self.last_event_id: str | None = None
        self.server_retry_delay: float | None = None
        self.consecutive_failures = 0
        self.stats: dict[str, Any] = {
            "connect_attempts": 0,
            "connections": 0,
            "failures": 0,
            "instructions_received": 0,
            "heartbeats_received": 0,
            "acks_sent": 0,
            "last_connected_at": None,
            "last_error": None,
        }

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a stream is open and the server has sent its first event."""
        return self._connected.is_set()

    @property
    def running(self) -> bool:
        """True while a ``stream_instructions*`` call is active."""
        return self._running

    def stop(self) -> None:
        """Ask the stream to end (thread-safe, idempotent). Interrupts a blocked read or backoff sleep
        promptly."""
        self._stop_requested.set()
        loop, event = self._loop, self._async_stop
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(event.set)

    def _api(self) -> AsyncSmartEMAPIClient:
        loop = asyncio.get_running_loop()
        if self._async_api is None or self._async_api_loop is not loop:
            # An httpx.AsyncClient's pool belongs to one event loop: make one per loop.
            self._async_api = AsyncSmartEMAPIClient(
                self.base_url,
                timeout=self.timeout,
                logger=self.logger,
                auth=self._auth,
                transport=self._transport,
                verify=self._verify,
                retry=RetryPolicy.disabled(),  # acks and heartbeats have their own policies
            )
            self._async_api_loop = loop
        return self._async_api

    async def _close_async_api(self) -> None:
        api, self._async_api, self._async_api_loop = self._async_api, None, None
        if api is not None:
            await api.aclose()

    @contextlib.asynccontextmanager
    async def _ack_api(self) -> AsyncGenerator[AsyncSmartEMAPIClient, None]:
        """The streaming loop's API client when acking from that loop, else a temporary one (closed after)."""
        if self._running and self._loop is asyncio.get_running_loop():
            yield self._api()
            return
        async with AsyncSmartEMAPIClient(
            self.base_url,
            timeout=self.timeout,
            logger=self.logger,
            auth=self._auth,
            transport=self._transport,
            verify=self._verify,
            retry=RetryPolicy.disabled(),
        ) as api:
            yield api

    def _sync_client(self) -> SmartEMAPIClient:
        with self._sync_api_lock:
            if self._sync_api is None:
                self._sync_api = SmartEMAPIClient(
                    self.base_url,
                    timeout=self.timeout,
                    logger=self.logger,
                    auth=self._auth,
                    transport=self._sync_transport,
                    verify=self._verify,
                    retry=RetryPolicy.disabled(),
                )
            return self._sync_api

    def close(self) -> None:
        """Release the sync HTTP client used by :meth:`acknowledge_instruction`."""
        with self._sync_api_lock:
            if self._sync_api is not None:
                self._sync_api.close()
                self._sync_api = None

    # -- waiting that stop() can interrupt -------------------------------------------------------------------

    async def _race_stop(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` unless stop() is called first (then raise ``_Stopped``)."""
        assert self._async_stop is not None
        work = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._async_stop.wait())
        try:
            done, _pending = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _abandon(work)
            raise
        finally:
            stopper.cancel()
        if work in done:
            return work.result()
        await _abandon(work)
        raise _Stopped

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await self._race_stop(asyncio.sleep(seconds))
        elif self._stop_requested.is_set():
            raise _Stopped

    def _next_delay(self) -> float:
        base = self.initial_retry_delay
        if self.server_retry_delay is not None:
            base = min(self.server_retry_delay, self.max_retry_delay)
        return backoff_delay(max(1, self.consecutive_failures), base, self.max_retry_delay, rng=self._rng)

    # -- the stream ------------------------------------------------------------------------------------------

    def _parse(self, sse: ServerSentEvent) -> StreamEvent | None:
        if not sse.data:
            # A block carrying only ``retry:`` or ``id:`` (the testbed's reconnect hint): nothing to dispatch.
            return None
        try:
            data = json.loads(sse.data)
        except ValueError:
            raise InvalidResponseError(
                f"SSE event {sse.event!r} has non-JSON data", path=self._stream_path
            ) from None
        if not isinstance(data, dict):
            raise InvalidResponseError(
                f"SSE event {sse.event!r} data is not an object", path=self._stream_path
            )
        # SmartEM's client dispatches on data["type"]; fall back to the SSE event name when it is absent.
        data.setdefault("type", sse.event)
        if data["type"] not in ("connection", "instruction", "heartbeat", "error"):
            self.logger.warning(
                "ignoring unknown SSE event type %r", data["type"], extra={"event": "sse.unknown"}
            )
            return None
        try:
            return _EVENTS.validate_python(data)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"SSE {data['type']} event does not match the contract ({exc.error_count()} errors)",
                path=self._stream_path,
            ) from exc

    async def _open(self, http: httpx.AsyncClient) -> AsyncGenerator[StreamEvent | Exception, None]:
        """One connection: yields parsed events, or exceptions for bad events (the stream goes on)."""
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        self.stats["connect_attempts"] += 1
        with map_transport_errors("GET", self._stream_path):
            async with aconnect_sse(http, "GET", self._stream_path, headers=headers) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    error = error_for_response(response)
                    if response.status_code in (403, 404):
                        raise SessionError(
                            f"session {self.session_id} of agent {self.agent_id} refused: {error}",
                            status_code=error.status_code,
                            detail=error.detail,
                            method="GET",
                            path=self._stream_path,
                        )
                    raise error
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise InvalidResponseError(
                        f"stream answered {content_type!r} instead of text/event-stream",
                        status_code=200,
                        method="GET",
                        path=self._stream_path,
                    )
                iterator = source.aiter_sse().__aiter__()
                try:
                    while True:
                        try:
                            sse = await self._race_stop(iterator.__anext__())
                        except StopAsyncIteration:
                            return
                        if sse.retry is not None:
                            self.server_retry_delay = sse.retry / 1000.0
                        if sse.id:
                            self.last_event_id = sse.id
                        try:
                            event = self._parse(sse)
                        except InvalidResponseError as exc:
                            yield exc
                            continue
                        if event is not None:
                            yield event
                finally:
                    with contextlib.suppress(Exception):
                        await iterator.aclose()  # type: ignore[attr-defined]

    def _give_up(self, last: BaseException | None) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"instruction stream: gave up after {self.consecutive_failures} consecutive failed connection "
            f"attempts" + (f" (last error: {last})" if last else ""),
            method="GET",
            path=self._stream_path,
        )

    async def events(
        self,
        *,
        on_error: Callable[[Exception], Any] | None = None,
        auto_retry: bool = True,
    ) -> AsyncIterator[StreamEvent]:
        """Parsed stream events across reconnects, until :meth:`stop` (then the iterator just ends).

        ``on_error`` receives every transient error (dropped connection, bad event, 5xx) as it happens; it may
        be a coroutine function. Raises :class:`SessionError` for an unusable session and
        :class:`~backend_client.errors.BackendUnavailableError` after ``max_retries`` consecutive failures (or
        after the first failure when ``auto_retry`` is false).
        """
        if self._running:
            raise RuntimeError("this SSEAgentClient is already streaming")
        self._running = True
        self._stop_requested.clear()
        self._loop = asyncio.get_running_loop()
        self._async_stop = asyncio.Event()
        timeout = httpx.Timeout(self.timeout, read=self.read_timeout)
        heartbeat: AgentHeartbeatSender | None = None
        if self.heartbeat_interval:
            heartbeat = AgentHeartbeatSender(
                self._api(),
                self.agent_id,
                self.session_id,
                interval=self.heartbeat_interval,
                is_connected=self._connected.is_set,
                logger=self.logger,
            )
        http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            auth=self._auth,
            transport=self._transport,
            verify=self._verify,
        )
        try:
            async for event in self._reconnecting(http, heartbeat, on_error, auto_retry):
                yield event
        except _Stopped:
            return
        finally:
            self._connected.clear()
            if heartbeat is not None:
                await heartbeat.stop()
            await http.aclose()
            await self._close_async_api()
            self._running = False
            self._async_stop = None
            self._loop = None

    async def _report(self, on_error: Callable[[Exception], Any] | None, exc: Exception) -> None:
        self.stats["last_error"] = str(exc)
        if on_error is not None:
            try:
                await _maybe_await(on_error(exc))
            except Exception:
                self.logger.exception("error callback raised")

    def _mark_healthy(self) -> None:
        self.consecutive_failures = 0
        self._connected.set()
        self.stats["connections"] += 1
        self.stats["last_connected_at"] = time.time()

    def _account(self, item: StreamEvent) -> BackendError | None:
        """Bookkeeping for one event; returns the failure that an ``error`` event means (raises
        SessionError)."""
        if isinstance(item, ConnectionEvent):
            self.connection_id = item.connection_id
            self.logger.info(
                "instruction stream connected",
                extra={"event": "sse.connected", "connection_id": item.connection_id},
            )
        elif isinstance(item, InstructionEvent):
            self.stats["instructions_received"] += 1
        elif isinstance(item, HeartbeatEvent):
            self.stats["heartbeats_received"] += 1
        elif isinstance(item, ErrorEvent):
            message = f"{item.error}: {item.message}" if item.message else str(item.error)
            if item.error in _SESSION_ERRORS:
                raise SessionError(
                    f"session {self.session_id} rejected agent {self.agent_id}: {message}",
                    detail=item.message,
                    method="GET",
                    path=self._stream_path,
                )
            # Other server-side errors (connection_creation_failed, listen_setup_failed) are transient.
            return ServerError(
                f"stream error event: {message}", detail=item.message, method="GET", path=self._stream_path
            )
        return None

    async def _after_failure(
        self,
        failure: BackendError,
        healthy: bool,
        on_error: Callable[[Exception], Any] | None,
        auto_retry: bool,
    ) -> None:
        if healthy:
            # The connection worked before failing: the backoff starts again from the bottom.
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        self.stats["failures"] += 1
        self.logger.warning(
            "instruction stream failed",
            extra={
                "event": "sse.failed",
                "consecutive_failures": self.consecutive_failures,
                "error": str(failure),
                "status_code": failure.status_code,
            },
        )
        await self._report(on_error, failure)
        if isinstance(failure, AuthenticationError) and isinstance(self._auth, ClientCredentialsAuth):
            self._auth.invalidate()  # the refreshed token was refused too: fetch a fresh one next time
        if not auto_retry or (self.max_retries is not None and self.consecutive_failures > self.max_retries):
            raise self._give_up(failure) from failure

    async def _reconnecting(
        self,
        http: httpx.AsyncClient,
        heartbeat: AgentHeartbeatSender | None,
        on_error: Callable[[Exception], Any] | None,
        auto_retry: bool,
    ) -> AsyncGenerator[StreamEvent, None]:
        self.consecutive_failures = 0
        while not self._stop_requested.is_set():
            healthy = False
            failure: BackendError | None = None
            try:
                async with contextlib.aclosing(self._open(http)) as stream:
                    async for item in stream:
                        if isinstance(item, Exception):
                            await self._report(on_error, item)
                            continue
                        if not healthy:
                            healthy = True
                            self._mark_healthy()
                            if heartbeat is not None and not heartbeat.running:
                                await heartbeat.start()
                        failure = self._account(item)
                        yield item
                        if failure is not None:
                            break
            except BackendError as exc:
                if isinstance(exc, SessionError):
                    raise
                failure = exc
            finally:
                self._connected.clear()
            if self._stop_requested.is_set():
                return
            if failure is None and healthy:
                self.logger.info(
                    "instruction stream ended by the server, reconnecting", extra={"event": "sse.ended"}
                )
            else:
                failure = failure or BackendUnavailableError(
                    "stream closed before the first event", method="GET", path=self._stream_path
                )
                await self._after_failure(failure, healthy, on_error, auto_retry)
            await self._sleep(self._next_delay())

    async def stream_instructions_async(
        self,
        instruction_callback: Callable[[dict[str, Any]], Any],
        connection_callback: Callable[[dict[str, Any]], Any] | None = None,
        error_callback: Callable[[Exception], Any] | None = None,
        auto_retry: bool = True,
    ) -> None:
        """Stream instructions with automatic reconnects until :meth:`stop` (or a session error).

        Callbacks receive the event's JSON object as sent by the server (as SmartEM's client does; parse it
        with
        :class:`~backend_client.models.InstructionEvent` for a typed view) and may be coroutine functions. An
        exception raised by a callback is passed to ``error_callback`` and the stream goes on.

        Raises:
            SessionError: the session cannot be used with this agent id (configuration error).
            BackendUnavailableError: ``max_retries`` consecutive connection attempts failed.
        """
        try:
            async for event in self.events(on_error=error_callback, auto_retry=auto_retry):
                callback: Callable[[dict[str, Any]], Any] | None = None
                if isinstance(event, InstructionEvent):
                    callback = instruction_callback
                elif isinstance(event, ConnectionEvent):
                    callback = connection_callback
                if callback is None:
                    continue
                try:
                    await _maybe_await(callback(event.model_dump(mode="json", exclude_unset=True)))
                except Exception as exc:
                    self.logger.exception("instruction stream callback raised")
                    await self._report(error_callback, exc)
        except SessionError as exc:
            await self._report(error_callback, exc)
            raise

    def stream_instructions(
        self,
        instruction_callback: Callable[[dict[str, Any]], None],
        connection_callback: Callable[[dict[str, Any]], None] | None = None,
        error_callback: Callable[[Exception], None] | None = None,
    ) -> None:
        """Blocking variant of :meth:`stream_instructions_async` (runs its own event loop; call it from a
        thread that has none). Returns after :meth:`stop`."""
        asyncio.run(self.stream_instructions_async(instruction_callback, connection_callback, error_callback))

    # -- acknowledgements ------------------------------------------------------------------------------------

    def _ack_body(
        self,
        status: AckStatus,
        result: str | None,
        error_message: str | None,
        processing_time_ms: int | None,
        processed_at: datetime | None,
    ) -> AgentInstructionAcknowledgement:
        return AgentInstructionAcknowledgement(
            status=status,
            result=result,
            error_message=error_message,
            processing_time_ms=processing_time_ms,
            processed_at=processed_at,
        )

    def _should_wait_for_stream(self) -> bool:
        return self._running and not self._connected.is_set() and not self._stop_requested.is_set()

    async def acknowledge_async(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
        *,
        processed_at: datetime | None = None,
    ) -> AckResult:
        """Acknowledge with SmartEM-aware retries and report the outcome (never raises for backend errors)."""
        body = self._ack_body(status, result, error_message, processing_time_ms, processed_at)
        spec = ops.acknowledge(self.agent_id, self.session_id, instruction_id, body)
        tracker = _AckTracker(instruction_id, max(1, retry_count))
        while True:
            if self._should_wait_for_stream():
                await self._wait_connected_async(self.ack_connect_wait)
            try:
                async with self._ack_api() as api:
                    response = await api.request(spec, retry=RetryPolicy.disabled())
            except BackendError as exc:
                if tracker.failed(exc) == "done":
                    return tracker.result(self)
                await asyncio.sleep(tracker.delay(self.ack_retry_delay, self._rng))
                continue
            return tracker.succeeded(self, response)

    def acknowledge(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
        *,
        processed_at: datetime | None = None,
    ) -> AckResult:
        """Blocking twin of :meth:`acknowledge_async` (safe from any thread, also while streaming)."""
        body = self._ack_body(status, result, error_message, processing_time_ms, processed_at)
        spec = ops.acknowledge(self.agent_id, self.session_id, instruction_id, body)
        tracker = _AckTracker(instruction_id, max(1, retry_count))
        while True:
            if self._should_wait_for_stream():
                self._connected.wait(self.ack_connect_wait)
            try:
                response = self._sync_client().request(spec, retry=RetryPolicy.disabled())
            except BackendError as exc:
                if tracker.failed(exc) == "done":
                    return tracker.result(self)
                time.sleep(tracker.delay(self.ack_retry_delay, self._rng))
                continue
            return tracker.succeeded(self, response)

    async def _wait_connected_async(self, wait_s: float) -> None:
        # The connected flag is a threading.Event (acks may come from other threads); poll it cheaply.
        deadline = time.monotonic() + wait_s
        while self._should_wait_for_stream() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def acknowledge_instruction(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
    ) -> AgentInstructionAcknowledgementResponse:
        """Acknowledge an instruction with retry logic (SmartEM's signature).

        A repeated ack that SmartEM refuses with "invalid status" counts as success (the returned response has
        ``status == "already_acknowledged"``). Raises the last :class:`BackendError` when the ack could not be
        confirmed; use :meth:`acknowledge` for the full :class:`~backend_client.models.AckResult`.
        """
        outcome = self.acknowledge(
            instruction_id, status, result, error_message, processing_time_ms, retry_count
        )
        return _response_or_raise(outcome)

    async def acknowledge_instruction_async(
        self,
        instruction_id: str,
        status: AckStatus,
        result: str | None = None,
        error_message: str | None = None,
        processing_time_ms: int | None = None,
        retry_count: int = 3,
    ) -> AgentInstructionAcknowledgementResponse:
        """Async twin of :meth:`acknowledge_instruction`."""
        outcome = await self.acknowledge_async(
            instruction_id, status, result, error_message, processing_time_ms, retry_count
        )
        return _response_or_raise(outcome)


AckFailureKind = Literal["already", "not_connected", "retry", "fatal"]


def classify_ack_failure(exc: BackendError) -> AckFailureKind:
    """How an ack failure is handled, from SmartEM's documented and observed answers.

    * 400/409 mentioning "invalid status" or "already": a previous ack landed -> success.
    * 400/404 "not connected" / "no active connection": the stream is down -> wait for it, retry.
    * transient errors, 500 (SmartEM maps every ack error to 500) and a 401 that survived a refresh -> retry
      (capped).
    * anything else (422 extra fields, 403 wrong agent, 404 unknown instruction) -> give up.
    """
    detail = (exc.detail or "").lower()
    status = exc.status_code
    if status in (400, 409) and ("invalid status" in detail or "already" in detail):
        return "already"
    if status in (400, 404) and ("not connected" in detail or "no active connection" in detail):
        return "not_connected"
    if isinstance(exc, BackendUnavailableError | ServerError) or status == 401:
        return "retry"
    return "fatal"


class _AckTracker:
    """Attempt bookkeeping shared by the sync and async ack drivers."""

    def __init__(self, instruction_id: str, attempts: int) -> None:
        self.instruction_id = instruction_id
        self.max_attempts = attempts
        self.attempts = 0
        self.maybe_delivered = False
        self.last_error: BackendError | None = None
        self.already = False

    def failed(self, exc: BackendError) -> Literal["again", "done"]:
        self.attempts += 1
        self.last_error = exc
        kind = classify_ack_failure(exc)
        if exc.status_code is None and not isinstance(exc.__cause__, httpx.ConnectError):
            # Timeout or dropped connection after the request was written: it may have been stored.
            self.maybe_delivered = True
        if kind == "already":
            self.already = True
            return "done"
        if kind == "fatal" or self.attempts >= self.max_attempts:
            return "done"
        return "again"

    def delay(self, base: float, rng: random.Random) -> float:
        return backoff_delay(self.attempts, base, max(base, 30.0), rng=rng)

    def succeeded(
        self, client: SSEAgentClient, response: AgentInstructionAcknowledgementResponse
    ) -> AckResult:
        self.attempts += 1
        client.stats["acks_sent"] += 1
        return AckResult(
            outcome="acknowledged",
            attempts=self.attempts,
            maybe_delivered=True,
            response=response,
            last_status=200,
        )

    def result(self, client: SSEAgentClient) -> AckResult:
        error = self.last_error
        if self.already:
            client.stats["acks_sent"] += 1
            client.logger.info(
                "instruction %s was already acknowledged",
                self.instruction_id,
                extra={"event": "sse.ack_repeat"},
            )
            return AckResult(
                outcome="already_acknowledged",
                attempts=self.attempts,
                maybe_delivered=True,
                response=AgentInstructionAcknowledgementResponse(
                    status="already_acknowledged",
                    instruction_id=self.instruction_id,
                    agent_id=client.agent_id,
                    session_id=client.session_id,
                ),
                last_status=error.status_code if error else None,
            )
        client.logger.warning(
            "acknowledgement of %s not confirmed after %d attempts",
            self.instruction_id,
            self.attempts,
            extra={"event": "sse.ack_unconfirmed", "error": str(error)},
        )
        return AckResult(
            outcome="unconfirmed",
            attempts=self.attempts,
            maybe_delivered=self.maybe_delivered,
            last_error=str(error) if error else None,
            last_status=error.status_code if error else None,
        ).with_error(error)


def _response_or_raise(outcome: AckResult) -> AgentInstructionAcknowledgementResponse:
    if outcome.response is not None:
        return outcome.response
    if outcome.error is not None:
        raise outcome.error
    raise BackendError(f"acknowledgement not confirmed after {outcome.attempts} attempts")


__all__ = [
    "DEFAULT_READ_TIMEOUT",
    "AgentHeartbeatSender",
    "SSEAgentClient",
    "classify_ack_failure",
]
