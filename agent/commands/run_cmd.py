"""``em-agent run``: the daemon (ingest + instructions), composed from the settings.

This is the only place that knows every part: the state database, the backend clients, the ingest service, the
instruction service with its device and decision-service handles, the heartbeat and the log shipper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.commands.common import add_config_argument, settings_from_args
from agent.connections import backend_auth, backend_client_options, backend_verify
from agent.daemon import Daemon, NamedService
from agent.logging_setup import LogShipper, configure_logging
from agent.service import stall
from agent.settings import ConfigError, Settings, load_settings
from agent.state.database import Database, open_database

log = logging.getLogger("agent.run")

EXIT_CONFIG = 78
#: How long past the daemon's drain bound a stuck stop may take before the process exits anyway; below the
#: systemd unit's TimeoutStopSec (45 s) so the stacks are printed before systemd's SIGKILL.
STALL_MARGIN_S = 10.0


@dataclass
class Composition:
    """The daemon and the resources to release after it stopped."""

    daemon: Daemon
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ingest: Any | None = None
    instructions: Any | None = None

    async def close(self) -> None:
        """Release clients and the database (after the daemon stopped)."""
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()


def _database(settings: Settings) -> Database:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return open_database(settings.state_dir)


def compose(settings: Settings, *, shipper_out: list[LogShipper] | None = None) -> Composition:
    """Build the daemon from the settings (raises ConfigError for unusable combinations)."""
    from backend_client.async_client import AsyncSmartEMAPIClient

    db = _database(settings)
    auth = backend_auth(settings.backend)
    verify: Any = backend_verify(settings.backend)
    api = AsyncSmartEMAPIClient(settings.backend.url, **backend_client_options(settings.backend, auth))
    services: list[NamedService] = []
    comp = Composition(daemon=Daemon(services=services))

    async def close_db() -> None:
        db.close()

    comp.closers.append(close_db)
    close_auth = getattr(auth, "close", None)
    if callable(close_auth):  # OAuth2 client credentials hold their own token client

        async def close_token_client() -> None:
            await asyncio.to_thread(close_auth)

        comp.closers.append(close_token_client)
    comp.closers.append(api.aclose)

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
        comp.instructions = _compose_instructions(settings, db, api, auth, verify, comp, services)
    elif settings.ingest is None:
        raise ConfigError("nothing to do: set ingest.watch_dir (--watch) and/or session_id (--session-id)")

    if settings.logging.ship and settings.session_id:
        shipper = _log_shipper(settings, auth, verify)
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
    api: Any,
    auth: Any,
    verify: Any,
    comp: Composition,
    services: list[NamedService],
) -> Any:
    from agent.devices.simulator.config import SimulatorConfig
    from agent.instructions.config import RuntimeConfig, RuntimeSettings
    from agent.instructions.runner import DeviceOptions, build_decisions, build_device_handle, build_service
    from backend_client.async_client import AsyncSmartEMAPIClient
    from backend_client.retry import RetryPolicy
    from backend_client.sse import AgentHeartbeatSender, SSEAgentClient

    assert settings.session_id is not None
    sse = SSEAgentClient(
        settings.backend.url,
        settings.agent_id,
        settings.session_id,
        timeout=settings.backend.connect_timeout_s,
        max_retries=None,  # a daemon never gives up on its instruction stream
        auth=auth,
        verify=verify,
        read_timeout=settings.backend.sse_read_timeout_s,
    )
    # Acks are retried by the journal (across reconnects and restarts): one POST per attempt here.
    ack_api = AsyncSmartEMAPIClient(
        settings.backend.url, **backend_client_options(settings.backend, auth), retry=RetryPolicy.disabled()
    )
    comp.closers.append(ack_api.aclose)
    device = build_device_handle(
        DeviceOptions(
            backend=settings.device.backend,
            url=settings.device.url,
            api_key=settings.device.resolved_api_key(),
            device_slug=settings.device.device_slug,
            run_name=settings.device.run_name,
            simulator=SimulatorConfig(
                seed=settings.device.simulator_seed, time_factor=settings.device.simulator_time_factor
            ),
            openfibsem=settings.device.openfibsem,
        )
    )
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
            await asyncio.to_thread(device.close)

        comp.closers.append(close_device)
    services.append(NamedService("instructions", service, service.snapshot))
    if settings.backend.heartbeat_interval_s > 0:
        beat = AgentHeartbeatSender(
            api,
            settings.agent_id,
            settings.session_id,
            interval=settings.backend.heartbeat_interval_s,
            is_connected=lambda: sse.connected,
        )
        services.append(NamedService("heartbeat", beat))  # async start()/stop(): a Service as it is
    _apply_runtime_changes(runtime, comp, beat if settings.backend.heartbeat_interval_s > 0 else None)
    return service


def _apply_runtime_changes(runtime: Any, comp: Composition, beat: Any | None) -> None:
    """``agent.config.update`` changes take effect: log level, status-line period, heartbeat period."""

    def on_change(settings: Any, changes: dict[str, Any]) -> None:
        logging.getLogger().setLevel(str(settings.log_level).upper())
        comp.daemon.status_interval_s = float(settings.status_interval_s)
        if beat is not None and settings.heartbeat_interval_s > 0:
            beat.interval = float(settings.heartbeat_interval_s)
        log.info("agent.runtime_config_changed", extra={"changes": changes})

    runtime.subscribe(on_change)


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


def _log_shipper(settings: Settings, auth: Any, verify: Any) -> LogShipper:
    from backend_client.client import SmartEMAPIClient
    from backend_client.models import AgentLogEntry
    from backend_client.retry import RetryPolicy

    # A separate sync client used only by the shipper thread, never retried: a failed batch is counted and
    # dropped so that shipping can never hold up the agent.
    options = {**backend_client_options(settings.backend, auth), "timeout": 10.0}
    client = SmartEMAPIClient(settings.backend.url, **options, retry=RetryPolicy.disabled())
    assert settings.session_id is not None
    agent_id, session_id = settings.agent_id, settings.session_id

    def ship(batch: list[dict[str, Any]]) -> None:
        client.ship_logs(agent_id, session_id, [AgentLogEntry.model_validate(item) for item in batch])

    return LogShipper(
        ship, capacity=settings.logging.ship_buffer, interval_s=settings.logging.ship_interval_s
    )


async def run_daemon(settings: Settings, *, stop_bridge: Any | None = None, stall_exit: bool = False) -> int:
    """Compose and run the daemon until stopped; returns the exit code.

    ``stall_exit`` (process entry points only): a stop still unfinished ``STALL_MARGIN_S`` after the drain bound
    exits the process with thread stacks on stderr.
    """
    try:
        comp = compose(settings)
    except ConfigError as exc:
        log.error("agent.config_error", extra={"error": str(exc)})
        return EXIT_CONFIG
    if stall_exit:
        comp.daemon.stall_exit_s = comp.daemon.shutdown_timeout_s + STALL_MARGIN_S
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


def run_daemon_from_config(config_file: Path | None, *, stop_bridge: Any | None = None) -> int:
    """Blocking entry used by the Windows service host."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        print(f"em-agent: configuration error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    configure_logging(settings.logging)
    return stall.run(run_daemon(settings, stop_bridge=stop_bridge, stall_exit=True))


def _run(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {
        "agent_id": args.agent_id,
        "session_id": args.session_id,
        "state_dir": args.state_dir,
        "backend.url": args.backend,
        "device.backend": args.device,
        "logging.level": args.log_level,
    }
    if args.watch is not None:
        flags["ingest.watch_dir"] = args.watch
    settings = settings_from_args(args, flags)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.logging)
    return stall.run(run_daemon(settings, stall_exit=True))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run``."""
    parser = subparsers.add_parser(
        "run",
        help="run the agent: watch EPU output and execute backend instructions",
        description="Run the daemon until SIGTERM/SIGINT (a second signal exits at once). Flags override the "
        "configuration file and EM_AGENT_* variables. Exit codes: 0 clean stop, 1 failure, 78 configuration "
        "error, 130 forced exit.",
    )
    add_config_argument(parser)
    parser.add_argument("--watch", type=Path, default=None, metavar="DIR", help="EPU output folder to watch")
    parser.add_argument("--backend", default=None, metavar="URL", help="SmartEM-compatible backend URL")
    parser.add_argument("--agent-id", default=None, metavar="ID", help="this agent's id")
    parser.add_argument(
        "--session-id", default=None, metavar="ID", help="agent session id (enables instructions)"
    )
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR", help="durable state folder")
    parser.add_argument(
        "--device",
        choices=["none", "simulator", "semphony", "openfibsem"],
        default=None,
        help="microscope backend",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    parser.set_defaults(func=_run)
