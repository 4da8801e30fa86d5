"""The reconnecting SSE instruction stream of one agent session (the stream part of ``SSEAgentClient``).

The stream (``GET /agent/{agent_id}/session/{session_id}/instructions/stream``, httpx-sse) is kept open for as
long as the caller wants it:

* every drop (server restart, network error, silence longer than ``read_timeout``, 5xx) is followed by a
  reconnect after ``uniform(base, min(max_retry_delay, base * 2**(n-1)))`` seconds (full jitter), where
  ``base`` is ``initial_retry_delay`` or the server's ``retry:`` hint and ``n`` counts consecutive failed
  attempts; a healthy connection (one that delivered an event) resets ``n``;
* it gives up after ``max_retries`` consecutive failures (``None``: never), raising
  :class:`~backend_client.errors.BackendUnavailableError`;
* a session that cannot work (``error`` event ``session_validation_failed``, HTTP 403/404) raises
  :class:`~backend_client.errors.SessionError` at once instead of reconnecting in a loop;
* ``Last-Event-ID`` is sent when events carried ids (SmartEM's do not; the testbed's strict mode does);
* a 401 makes the auth (``ClientCredentialsAuth``) refresh its token and resend once; tokens expiring while
  the stream is open are refreshed on the next connect.

SmartEM sends ``: ping`` comments every 15 s and a ``heartbeat`` event after 30 s idle, so the default read
timeout (45 s) never cuts a healthy stream. :meth:`SSEInstructionStream.stop` is thread-safe and interrupts a
blocked read or a backoff sleep promptly; it never interrupts a callback.

With ``heartbeat_interval`` the stream also owns a heartbeat sender (:mod:`backend_client.heartbeat`), started
on the first healthy connection and stopped when the stream ends.
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
from typing import Any, cast

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse
from pydantic import TypeAdapter, ValidationError

from backend_client import paths
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.auth import ClientCredentialsAuth
from backend_client.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    InvalidResponseError,
    ServerError,
    SessionError,
    error_for_response,
    map_transport_errors,
)
from backend_client.heartbeat import AgentHeartbeatSender, stream_heartbeat_sender
from backend_client.models import (
    ConnectionEvent,
    ErrorEvent,
    HeartbeatEvent,
    InstructionEvent,
    StreamEvent,
)
from backend_client.retry import RetryPolicy, backoff_delay

__all__ = ["DEFAULT_READ_TIMEOUT", "SSEInstructionStream"]

DEFAULT_READ_TIMEOUT = 45.0
"""Longer than SmartEM's 15 s ping period and 30 s heartbeat period: only a dead stream stays silent that
long."""

# cast: pydantic's stubs type the argument as a class, and newer ones reject a union of classes (valid at run time).
_EVENTS: TypeAdapter[StreamEvent] = TypeAdapter(cast(Any, StreamEvent))
_SESSION_ERRORS = frozenset({"session_validation_failed"})


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class _Stopped(Exception):
    """Internal: the stream was stopped while waiting."""


async def _abandon(work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` and let it unwind before the caller closes the connection it reads from.

    Bounded, so a read that ignores cancellation cannot hold up a stop; not ``suppress(BaseException)``, so a
    cancellation of the calling task still propagates. Its outcome is retrieved: the read is being abandoned.
    """
    work.cancel()
    await asyncio.wait({work}, timeout=1.0)
    if work.done() and not work.cancelled():
        work.exception()


class SSEInstructionStream:
    """The reconnecting instruction stream of one agent session (see the module docstring).

    ``SSEAgentClient`` is this stream plus acknowledgements; its docstring lists the arguments.
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
        read_timeout: float | None = None,
        heartbeat_interval: float | None = None,
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
        self.logger = logger or logging.getLogger("backend_client.sse")
        self._auth = auth
        self._transport = transport
        self._verify = verify
        self._rng = rng or random.Random()
        self._stream_path = paths.build(paths.AGENT_STREAM, agent_id=agent_id, session_id=session_id)

        # State shared with other threads (stop(), acks from worker threads): events and plain attributes only.
        self._connected = threading.Event()
        self._stop_requested = threading.Event()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None
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
            "acks_sent": 0,  # counted by SSEAgentClient's acknowledger; kept here so stats has one shape
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

    def _new_api(self) -> AsyncSmartEMAPIClient:
        """A fresh async API client with the stream's settings (URL, auth, transport, TLS)."""
        return AsyncSmartEMAPIClient(
            self.base_url,
            timeout=self.timeout,
            logger=self.logger,
            auth=self._auth,
            transport=self._transport,
            verify=self._verify,
            retry=RetryPolicy.disabled(),  # acks and heartbeats have their own policies
        )

    def _api(self) -> AsyncSmartEMAPIClient:
        loop = asyncio.get_running_loop()
        if self._async_api is None or self._async_api_loop is not loop:
            # An httpx.AsyncClient's pool belongs to one event loop: make one per loop.
            self._async_api = self._new_api()
            self._async_api_loop = loop
        return self._async_api

    async def _close_async_api(self) -> None:
        api, self._async_api, self._async_api_loop = self._async_api, None, None
        if api is not None:
            await api.aclose()

    def should_wait_for_stream(self) -> bool:
        """True while a ``stream_instructions*`` call runs but the stream is down (acks wait for it)."""
        return self._running and not self._connected.is_set() and not self._stop_requested.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block the calling thread until the stream is connected or ``timeout`` seconds passed."""
        return self._connected.wait(timeout)

    def api_for_current_loop(self) -> AsyncSmartEMAPIClient | None:
        """The streaming loop's API client when called on that loop (acks share its pool), else None."""
        if self._running and self._loop is asyncio.get_running_loop():
            return self._api()
        return None

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
            heartbeat = stream_heartbeat_sender(
                self._api(), self, interval=self.heartbeat_interval, logger=self.logger
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
        with :class:`~backend_client.models.InstructionEvent` for a typed view) and may be coroutine functions.
        An exception raised by a callback is passed to ``error_callback`` and the stream goes on.

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
