"""Composition helpers and a stand-alone runner: ``python -m agent.instructions`` (instructions only, no
ingest).

The daemon composes :class:`~agent.instructions.service.InstructionService` with :func:`build_service`; the
runner does the same from command-line options and runs until SIGTERM/SIGINT. Tests and the soak run it as a
subprocess so that it can be SIGKILLed and restarted on the same state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.devices.athena import AthenaClient
from agent.devices.factory import create_client
from agent.devices.guardrails import ImagingGuardrails
from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.semphony import ImagingDevice, SemphonyClient
from agent.devices.simulator.config import SimulatorConfig
from agent.instructions.acks import ApiAckSender
from agent.instructions.config import ExecutorConfig, RuntimeConfig
from agent.instructions.context import DecisionTarget, DeviceHandle, HandlerContext
from agent.instructions.introspection import IngestIntrospection
from agent.instructions.service import InstructionService, InstructionStream
from agent.service import stall
from agent.state.database import Database, open_database
from backend_client.async_client import AsyncSmartEMAPIClient
from backend_client.retry import RetryPolicy

log = logging.getLogger("agent.instructions.runner")

API_KEY_ENV = "EM_AGENT_DEVICE__API_KEY"
#: Seconds past the drain bound after which a stuck stop exits the process with thread stacks on stderr.
STALL_MARGIN_S = 20.0


@dataclass
class DeviceOptions:
    """How to reach the microscope: ``backend`` none | simulator | semphony (HTTP) | openfibsem."""

    backend: str = "none"
    url: str | None = None
    api_key: str | None = None
    device_slug: str = "sem-001"
    run_name: str = "em-agent"
    guardrails: ImagingGuardrails = field(default_factory=ImagingGuardrails)
    simulator: SimulatorConfig | None = None
    openfibsem: OpenFibsemConfig | None = None


def open_imaging_device(client: SemphonyClient, options: DeviceOptions) -> ImagingDevice:
    """Resume the run, open a guarded session and attach the SEM (taking it over from a dead predecessor)."""
    run = client.run(options.run_name)
    session = run.session(guardrails=options.guardrails).start()
    device = ImagingDevice(client, device_slug=options.device_slug)
    # force_close: after a crash the previous agent's session still holds the device.
    device.attach(session, force_close=True)
    return device


def build_device_handle(options: DeviceOptions) -> DeviceHandle[ImagingDevice] | None:
    """A lazily opened device handle, or None for ``backend = "none"``."""
    if options.backend == "none":
        return None
    client = create_client(
        options.backend,
        url=options.url,
        api_key=options.api_key,
        simulator=options.simulator,
        openfibsem=options.openfibsem,
        device_slug=options.device_slug,
    )

    def close(device: ImagingDevice) -> None:
        with contextlib.suppress(Exception):
            device.session.close()

    return DeviceHandle(lambda: open_imaging_device(client, options), close, release=client.close)


def build_service(
    config: ExecutorConfig,
    db: Database,
    *,
    sse_client: InstructionStream,
    api_client: AsyncSmartEMAPIClient,
    agent_id: str,
    session_id: str,
    state_dir: Path,
    device: DeviceHandle[ImagingDevice] | None = None,
    decisions: DecisionTarget | None = None,
    introspection: IngestIntrospection | None = None,
    runtime: RuntimeConfig | None = None,
) -> InstructionService:
    """Compose an :class:`InstructionService` from its parts (the daemon's entry point to this package)."""
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent.instructions", description=__doc__)
    p.add_argument("--backend", required=True, help="SmartEM-compatible backend URL")
    p.add_argument("--agent-id", required=True)
    p.add_argument("--session-id", required=True)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--device", default="none", choices=["none", "simulator", "semphony", "openfibsem"])
    p.add_argument("--device-url", default=None, help=f"Semphony URL (API key from ${API_KEY_ENV})")
    p.add_argument("--device-slug", default="sem-001")
    p.add_argument("--athena-url", default=None, help="Athena decision-service URL")
    p.add_argument("--athena-session-id", default=None)
    p.add_argument("--config-json", default="{}", help="ExecutorConfig fields as a JSON object")
    p.add_argument("--sse-retry-delay", type=float, default=1.0, help="first SSE reconnect delay, s")
    p.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="agent heartbeat POST period, s (0: none)"
    )
    p.add_argument("--log-level", default="INFO")
    return p


def build_decisions(url: str | None, session_id: str | None) -> DecisionTarget | None:
    """The Athena decision target, or None (queue-decision instructions are then declined)."""
    if not url:
        return None
    if not session_id:
        raise ValueError("an Athena URL needs the Athena session id of the EPU session (--athena-session-id)")
    return DecisionTarget(AthenaClient(url), session_id)


async def run_forever(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM/SIGINT."""
    from backend_client.sse import SSEAgentClient

    config = ExecutorConfig.model_validate(json.loads(args.config_json))
    db = open_database(args.state_dir)
    device = build_device_handle(
        DeviceOptions(
            backend=args.device,
            url=args.device_url,
            api_key=os.environ.get(API_KEY_ENV),
            device_slug=args.device_slug,
        )
    )
    # Acks have their own retry loop (the journal's); one POST per attempt here.
    api = AsyncSmartEMAPIClient(args.backend, retry=RetryPolicy.disabled())
    decisions = build_decisions(args.athena_url, args.athena_session_id)
    sse = SSEAgentClient(
        args.backend,
        args.agent_id,
        args.session_id,
        max_retries=None,
        initial_retry_delay=args.sse_retry_delay,
        max_retry_delay=max(args.sse_retry_delay, 5.0),
        # SmartEM closes a connection without heartbeats after 2 minutes.
        heartbeat_interval=args.heartbeat_interval or None,
    )
    service = build_service(
        config,
        db,
        sse_client=sse,
        api_client=api,
        agent_id=args.agent_id,
        session_id=args.session_id,
        state_dir=args.state_dir,
        device=device,
        decisions=decisions,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await service.start()
    log.info("instructions.runner_started", extra={"pid": os.getpid()})
    await stop.wait()
    # The stop below is bounded part by part; this catches a thread blocked where no bound reaches.
    stall.arm(config.drain_timeout_s + STALL_MARGIN_S)
    await service.stop()
    await api.aclose()
    if decisions is not None:
        await decisions.client.close()
    db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m agent.instructions``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    return stall.run(run_forever(args))
