"""The composition root: the one place that builds the daemon, and the clients the preflight probes, from
:class:`~agent.settings.Settings`.

It knows every part: the state database, the backend clients and their auth, the ingest service, the
instruction service with its device and decision-service handles, the heartbeat, the AMQP bridge, the log
shipper and the status line. Every entry point goes through it and only parses arguments: ``em-agent run``
(:mod:`agent.commands.run_cmd`), the Windows service (:mod:`agent.service.windows`), the stand-alone instruction
runner (``em-agent instructions``, :mod:`agent.commands.instructions_cmd`), the demo, and ``em-agent check``,
which probes the backend and the instruction stream with clients built here, the daemon's way.

The microscope is built in one section of this module: :func:`device_options` (from ``[device]``),
:func:`device_client` (the SDK client the preflight uses) and :func:`build_device_handle` (the daemon's lazily
opened device), both over one :func:`device_backend`, so that a change of the device call path touches only that
section.

Heavy parts (ingest, instructions, devices, AMQP) are imported where they are composed: every command module
imports this one, and ``em-agent --help`` should not load the device layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx

from agent.connections import backend_auth, backend_client_options, backend_verify
from agent.daemon import Daemon, NamedService
from agent.logging_setup import LogShipper, configure_logging
from agent.process import stall
from agent.settings import ConfigError, DeviceSettings, Settings, load_settings
from agent.state.database import Database, open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.models import StreamEvent
from backend_client.retry import RetryPolicy
from backend_client.sse import SSEAgentClient

if TYPE_CHECKING:
    from agent.devices.backend import DeviceBackend
    from agent.devices.guardrails import ImagingGuardrails
    from agent.devices.microscope import Microscope
    from agent.devices.openfibsem.config import OpenFibsemConfig
    from agent.devices.semphony import SemphonyClient
    from agent.devices.simulator_config import SimulatorConfig
    from agent.heartbeat import AdjustableHeartbeat
    from agent.ingest import IngestService
    from agent.instructions.config import ExecutorConfig, RuntimeConfig
    from agent.instructions.context import DecisionTarget, DeviceHandle
    from agent.instructions.introspection import IngestIntrospection
    from agent.instructions.service import InstructionService, InstructionStream
    from backend_client.client import SmartEMAPIClient

log = logging.getLogger("agent.run")

EXIT_CONFIG = 78
#: How long past the daemon's drain bound a stuck stop may take before the process exits anyway; below the
#: systemd unit's TimeoutStopSec (45 s) so the stacks are printed before systemd's SIGKILL.
STALL_MARGIN_S = 10.0

__all__ = [
    "EXIT_CONFIG",
    "Composition",
    "DeviceOptions",
    "StopBridge",
    "backend_api",
    "build_decisions",
    "build_device_handle",
    "build_service",
    "compose",
    "device_backend",
    "device_client",
    "device_options",
    "instruction_stream",
    "probe_instruction_stream",
    "run",
    "run_daemon",
    "run_from_config",
    "unretried_backend_api",
]


class StopBridge(Protocol):
    """Carries a stop request from another thread (the Windows service control handler) into the daemon."""

    def attach(self, loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]) -> None:
        """Called once the daemon runs: from then on a stop request calls ``stop`` on ``loop``."""


@dataclass
class Composition:
    """The daemon and the resources to release after it stopped."""

    daemon: Daemon
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ingest: IngestService | None = None
    instructions: InstructionService | None = None

    async def close(self) -> None:
        """Release clients and the database (after the daemon stopped)."""
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()


# -- backend clients --------------------------------------------------------------------------------------------


def backend_api(
    settings: Settings, auth: httpx.Auth | None, *, retry: RetryPolicy | None = None
) -> AsyncSmartEMAPIClient:
    """The async REST client with the configured URL, auth, TLS and timeouts (``retry``: the client's default
    policy unless given)."""
    options: dict[str, Any] = backend_client_options(settings.backend, auth)
    if retry is not None:
        options["retry"] = retry
    return AsyncSmartEMAPIClient(settings.backend.url, **options)


def unretried_backend_api(settings: Settings, auth: httpx.Auth | None) -> SmartEMAPIClient:
    """A synchronous REST client with a 10 s timeout that never retries, for the log shipper's thread and the
    preflight: a failed call is reported (or counted and dropped), never waited out under the backoff."""
    from backend_client.client import SmartEMAPIClient

    options = {**backend_client_options(settings.backend, auth), "timeout": 10.0}
    return SmartEMAPIClient(settings.backend.url, **options, retry=RetryPolicy.disabled())


def instruction_stream(
    settings: Settings,
    auth: httpx.Auth | None,
    *,
    max_retries: int | None = None,
    retry_delay_s: float | None = None,
    read_timeout_s: float | None = None,
) -> SSEAgentClient:
    """The instruction stream of ``settings.session_id``.

    ``max_retries`` None: a daemon never gives up on its stream. ``retry_delay_s`` sets the first reconnect
    delay (the stream's default otherwise), with reconnects capped at 5 s or that delay, whichever is longer.
    """
    assert settings.session_id is not None
    # SSEAgentClient's own defaults (1 s, 60 s) unless a first delay is given.
    first_delay = 1.0 if retry_delay_s is None else retry_delay_s
    max_delay = 60.0 if retry_delay_s is None else max(retry_delay_s, 5.0)
    verify: Any = backend_verify(settings.backend)  # an ssl.SSLContext is accepted by httpx at run time
    return SSEAgentClient(
        settings.backend.url,
        settings.agent_id,
        settings.session_id,
        timeout=settings.backend.connect_timeout_s,
        max_retries=max_retries,
        auth=auth,
        verify=verify,
        initial_retry_delay=first_delay,
        max_retry_delay=max_delay,
        read_timeout=read_timeout_s if read_timeout_s is not None else settings.backend.sse_read_timeout_s,
    )


async def probe_instruction_stream(settings: Settings, *, timeout_s: float = 10.0) -> StreamEvent:
    """Open the instruction stream once, the daemon's way, and return its first event, then close it.

    Raises :class:`~backend_client.errors.SessionError` when the backend refuses the session (403/404 or a
    ``session_validation_failed`` event), another :class:`~backend_client.errors.BackendError` when the stream
    cannot be opened (no reconnect is tried), ``TimeoutError`` when no event came within ``timeout_s``.
    """
    auth = backend_auth(settings.backend)
    stream = instruction_stream(settings, auth, max_retries=0, read_timeout_s=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            # events() is an async generator: closed here, so that its connection closes with the probe.
            events = cast(AsyncGenerator[StreamEvent, None], stream.events(auto_retry=False))
            async with contextlib.aclosing(events):
                async for event in events:
                    return event
        raise TimeoutError("the stream ended before its first event")
    finally:
        stream.stop()
        await _close_auth(auth)


async def _close_auth(auth: httpx.Auth | None) -> None:
    close = getattr(auth, "close", None)
    if callable(close):  # OAuth2 client credentials hold their own token client
        await asyncio.to_thread(close)


# -- the microscope and the decision service ------------------------------------------------------------------


@dataclass
class DeviceOptions:
    """How to reach the microscope: ``backend`` none | simulator | semphony (HTTP) | openfibsem."""

    backend: str = "none"
    url: str | None = None
    api_key: str | None = None
    device_slug: str = "sem-001"
    run_name: str = "em-agent"
    guardrails: ImagingGuardrails | None = None
    simulator: SimulatorConfig | None = None
    openfibsem: OpenFibsemConfig | None = None


def device_options(device: DeviceSettings) -> DeviceOptions:
    """The device options the ``[device]`` settings describe."""
    return DeviceOptions(
        backend=device.backend,
        url=device.url,
        api_key=device.resolved_api_key(),
        device_slug=device.device_slug,
        run_name=device.run_name,
        simulator=device.simulator_config(),
        openfibsem=device.openfibsem,
    )


def device_backend(options: DeviceOptions, *, timeout: float | None = None) -> DeviceBackend:
    """The configured microscope's backend (``timeout``: per call, the factory's default if None)."""
    from agent.devices.factory import create_backend

    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    return create_backend(
        options.backend,
        url=options.url,
        api_key=options.api_key,
        simulator=options.simulator,
        openfibsem=options.openfibsem,
        device_slug=options.device_slug,
        **extra,
    )


def device_client(options: DeviceOptions, *, timeout: float | None = None) -> SemphonyClient:
    """The SDK client of the configured microscope (``timeout``: per call, the factory's default if None)."""
    from agent.devices.semphony import SemphonyClient

    return SemphonyClient.from_backend(device_backend(options, timeout=timeout))


def build_device_handle(options: DeviceOptions) -> DeviceHandle[Microscope] | None:
    """The daemon's lazily opened microscope: the asynchronous device facade over the configured backend (one
    asyncio lane, no thread bridge), or None for ``backend = "none"``."""
    from agent.instructions.context import microscope_handle

    if options.backend == "none":
        return None
    backend = device_backend(options)
    return microscope_handle(
        backend, run_name=options.run_name, device_slug=options.device_slug, guardrails=options.guardrails
    )


def build_decisions(url: str | None, session_id: str | None) -> DecisionTarget | None:
    """The Athena decision target, or None (queue-decision instructions are then declined)."""
    from agent.devices.athena import AthenaClient
    from agent.instructions.context import DecisionTarget

    if not url:
        return None
    if not session_id:
        raise ValueError("an Athena URL needs the Athena session id of the EPU session (--athena-session-id)")
    return DecisionTarget(AthenaClient(url), session_id)


# -- the daemon ---------------------------------------------------------------------------------------------------


def build_service(
    config: ExecutorConfig,
    db: Database,
    *,
    sse_client: InstructionStream,
    api_client: AsyncSmartEMAPIClient,
    agent_id: str,
    session_id: str,
    state_dir: Path,
    device: DeviceHandle[Microscope] | None = None,
    decisions: DecisionTarget | None = None,
    introspection: IngestIntrospection | None = None,
    runtime: RuntimeConfig | None = None,
) -> InstructionService:
    """An :class:`~agent.instructions.service.InstructionService` from its parts (acks through ``api_client``)."""
    from agent.instructions.acks import ApiAckSender
    from agent.instructions.config import RuntimeConfig
    from agent.instructions.context import HandlerContext
    from agent.instructions.service import InstructionService

    context = HandlerContext(
        state_dir=state_dir,
        runtime=runtime if runtime is not None else RuntimeConfig(),
        device=device,
        decisions=decisions,
        introspection=introspection,
        agent_id=agent_id,
        session_id=session_id,
    )
    sender = ApiAckSender(api_client, agent_id, session_id)
    return InstructionService(config, db, sse_client, sender, context)


def compose(
    settings: Settings,
    *,
    shipper_out: list[LogShipper] | None = None,
    stream_retry_delay_s: float | None = None,
) -> Composition:
    """Build the daemon from the settings (raises ConfigError for unusable combinations).

    ``shipper_out`` receives the log shipper when one is composed; ``stream_retry_delay_s`` shortens the
    instruction stream's first reconnect delay (the stand-alone runner's ``--sse-retry-delay``).
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.state_dir)
    auth = backend_auth(settings.backend)
    api = backend_api(settings, auth)
    services: list[NamedService] = []
    comp = Composition(daemon=Daemon(services=services))

    async def close_db() -> None:
        db.close()

    async def close_auth() -> None:
        await _close_auth(auth)

    comp.closers += [close_db, close_auth, api.aclose]

    if settings.ingest is not None:
        from agent.ingest import IngestService

        ingest = IngestService(settings.ingest, db, api)
        comp.ingest = ingest
        services.append(NamedService("ingest", ingest, ingest.snapshot))

    if settings.amqp.url is not None and comp.ingest is not None:
        bridge = _event_bridge(settings)
        comp.ingest.add_confirm_listener(bridge.on_confirmed)
        # Started before ingest (connected when the first confirmations come), stopped after it.
        services.insert(0, NamedService("amqp", bridge, bridge.snapshot))

    if settings.session_id:
        comp.instructions = _compose_instructions(settings, db, api, auth, comp, stream_retry_delay_s)
    elif settings.ingest is None:
        raise ConfigError("nothing to do: set ingest.watch_dir (--watch) and/or session_id (--session-id)")

    if settings.logging.ship and settings.session_id:
        shipper = _log_shipper(settings, auth)
        logging.getLogger().addHandler(shipper)
        if shipper_out is not None:
            shipper_out.append(shipper)

        async def close_shipper() -> None:
            logging.getLogger().removeHandler(shipper)
            await asyncio.to_thread(shipper.close)

        comp.closers.append(close_shipper)

    comp.daemon.status_interval_s = settings.logging.status_interval_s
    return comp


def _compose_instructions(
    settings: Settings,
    db: Database,
    api: AsyncSmartEMAPIClient,
    auth: httpx.Auth | None,
    comp: Composition,
    stream_retry_delay_s: float | None,
) -> InstructionService:
    from agent.heartbeat import stream_heartbeat
    from agent.instructions.config import RuntimeConfig, RuntimeSettings

    assert settings.session_id is not None
    sse = instruction_stream(settings, auth, retry_delay_s=stream_retry_delay_s)
    # Acks are retried by the journal (across reconnects and restarts): one POST per attempt here.
    ack_api = backend_api(settings, auth, retry=RetryPolicy.disabled())
    comp.closers.append(ack_api.aclose)
    device = build_device_handle(device_options(settings.device))
    try:
        decisions = build_decisions(settings.device.athena_url, settings.device.athena_session_id)
    except ValueError as exc:
        raise ConfigError(f"device.athena_session_id: {exc}") from exc
    level = settings.logging.level.upper()
    runtime = RuntimeConfig(
        RuntimeSettings(
            status_interval_s=max(1.0, settings.logging.status_interval_s),
            log_level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
            heartbeat_interval_s=settings.backend.heartbeat_interval_s,
        )
    )
    service = build_service(
        settings.instructions,
        db,
        sse_client=sse,
        api_client=ack_api,
        agent_id=settings.agent_id,
        session_id=settings.session_id,
        state_dir=settings.state_dir,
        device=device,
        decisions=decisions,
        introspection=comp.ingest,
        runtime=runtime,
    )
    if device is not None:

        async def close_device() -> None:
            await device.aclose()  # idempotent: the instruction service's stop has usually closed it already

        comp.closers.append(close_device)
    if decisions is not None:
        comp.closers.append(decisions.client.close)
    services = comp.daemon.services
    services.append(NamedService("instructions", service, service.snapshot))
    # Always composed, even at period 0, so that agent.config.update can turn the heartbeat on later.
    beat = stream_heartbeat(api, sse, settings.backend.heartbeat_interval_s)
    services.append(NamedService("heartbeat", beat))
    _bind_runtime_appliers(runtime, comp.daemon, beat)
    return service


def _bind_runtime_appliers(runtime: RuntimeConfig, daemon: Daemon, beat: AdjustableHeartbeat) -> None:
    """How each ``agent.config.update`` key takes effect in the daemon: root log level, status-line period
    (re-timed at once), heartbeat period (0 stops it, a positive one restarts it)."""
    from agent.instructions.config import apply_root_log_level

    async def apply_status_interval(value: Any) -> None:
        daemon.set_status_interval(float(value))

    async def apply_heartbeat_interval(value: Any) -> None:
        await beat.set_interval(float(value))

    runtime.bind("log_level", apply_root_log_level)
    runtime.bind("status_interval_s", apply_status_interval)
    runtime.bind("heartbeat_interval_s", apply_heartbeat_interval)


def _event_bridge(settings: Settings) -> Any:
    from agent.events import EntityEventBridge
    from backend_client.amqp import AmqpEventPublisher, AmqpPublisherConfig

    assert settings.amqp.url is not None
    publisher = AmqpEventPublisher(
        AmqpPublisherConfig(
            url=settings.amqp.url.get_secret_value(),
            exchange=settings.amqp.exchange,
            queue=settings.amqp.queue,
        )
    )
    return EntityEventBridge(publisher, capacity=settings.amqp.buffer)


def _log_shipper(settings: Settings, auth: httpx.Auth | None) -> LogShipper:
    from backend_client.models import AgentLogEntry

    # A separate sync client used only by the shipper thread: a failed batch is counted and dropped so that
    # shipping can never hold up the agent.
    client = unretried_backend_api(settings, auth)
    assert settings.session_id is not None
    agent_id, session_id = settings.agent_id, settings.session_id

    def ship(batch: list[dict[str, Any]]) -> None:
        client.ship_logs(agent_id, session_id, [AgentLogEntry.model_validate(item) for item in batch])

    return LogShipper(
        ship, capacity=settings.logging.ship_buffer, interval_s=settings.logging.ship_interval_s
    )


# -- running it ---------------------------------------------------------------------------------------------------


async def run_daemon(
    settings: Settings,
    *,
    stop_bridge: StopBridge | None = None,
    stall_exit: bool = False,
    on_started: Callable[[], Awaitable[None]] | None = None,
    stream_retry_delay_s: float | None = None,
) -> int:
    """Compose and run the daemon until stopped; returns the exit code.

    ``stop_bridge`` (the Windows service's) is attached to the daemon's stop once it runs. ``stall_exit``
    (process entry points only): a stop still unfinished ``STALL_MARGIN_S`` after the drain bound exits the
    process with thread stacks on stderr. ``on_started`` runs once every service has started.
    """
    try:
        comp = compose(settings, stream_retry_delay_s=stream_retry_delay_s)
    except ConfigError as exc:
        log.error("agent.config_error", extra={"error": str(exc)})
        return EXIT_CONFIG
    if stall_exit:
        comp.daemon.stall_exit_s = comp.daemon.shutdown_timeout_s + STALL_MARGIN_S
    comp.daemon.on_started = on_started
    comp.daemon.install_signal_handlers()
    if stop_bridge is not None:
        stop_bridge.attach(asyncio.get_running_loop(), comp.daemon.request_stop)
    log.info(
        "agent.starting",
        extra={
            "pid": os.getpid(),
            "agent_id": settings.agent_id,
            "session_id": settings.session_id,
            "backend": settings.backend.url,
            "watch_dir": str(settings.ingest.watch_dir) if settings.ingest else None,
            "device": settings.device.backend,
            "state_dir": str(settings.state_dir),
        },
    )
    try:
        return await comp.daemon.run()
    finally:
        await comp.close()


def run(
    settings: Settings,
    *,
    stop_bridge: StopBridge | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
    stream_retry_delay_s: float | None = None,
) -> int:
    """Blocking entry of a process: run the daemon until stopped, with the stall exit armed on stop."""
    return stall.run(
        run_daemon(
            settings,
            stop_bridge=stop_bridge,
            stall_exit=True,
            on_started=on_started,
            stream_retry_delay_s=stream_retry_delay_s,
        )
    )


def run_from_config(config_file: Path | None, *, stop_bridge: StopBridge | None = None) -> int:
    """Blocking entry of the Windows service host: settings from ``config_file``, JSON logging, the daemon."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        print(f"em-agent: configuration error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    configure_logging(settings.logging)
    return run(settings, stop_bridge=stop_bridge)
