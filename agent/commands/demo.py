"""``em-agent demo``: the whole system on one machine, on embedded defaults.

It starts the testbed backend on a free loopback port, creates an agent session, writes a small simulated EPU
session over about 20 seconds into a temporary folder, runs the real agent (ingest + instructions, simulated SEM)
against it, issues instructions from the backend side while it runs, and prints a summary. The exit code is 0
only if the backend holds exactly the entities the generator's manifest says the folder contains and every
instruction was acknowledged with the status expected for it (an acknowledgement alone proves nothing: a
``failed`` or ``declined`` one is acknowledged too). The testbed is imported lazily: it is a demo and test
dependency only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent.aio import cancel_and_wait
from agent.app import compose
from agent.logging_setup import LoggingConfig, configure_logging
from agent.settings import load_settings

KINDS = ("acquisition", "grid", "atlas", "atlas_tile", "gridsquare", "foilhole", "micrograph")


@dataclass(frozen=True)
class DemoInstruction:
    """One instruction the demo issues, and the acknowledgement status it must get."""

    at_s: float  # seconds after the start
    instruction_type: str
    payload: dict[str, Any]
    expected: str = "processed"


# Instructions the demo issues while the session is being written. The decision-service one must be declined:
# the demo configures no Athena, and a queue change that cannot be made must never look done.
DEMO_INSTRUCTIONS: tuple[DemoInstruction, ...] = (
    DemoInstruction(2.0, "agent.status.request", {}),
    DemoInstruction(6.0, "sem.get_metrics", {}),
    DemoInstruction(
        9.0, "microscope.control.move_stage", {"stage_position": {"x": 0.0001, "y": -0.0002}, "unit": "m"}
    ),
    DemoInstruction(12.0, "agent.status.request", {}),
    DemoInstruction(14.0, "microscope.control.skip_gridsquares", {"gridsquare_ids": [1]}, "declined"),
    DemoInstruction(16.0, "agent.info.datastore", {}),
    DemoInstruction(20.0, "agent.status.request", {}),
)


@dataclass
class DemoState:
    """What the progress line and the summary show."""

    files_written: int = 0
    files_total: int = 0
    generator_done: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    instructions: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    acks: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def mismatches(self, history: list[dict[str, Any]]) -> list[str]:
        """One line per acknowledged instruction whose status is not the one expected for it."""
        types = {row["instruction_id"]: row["instruction_type"] for row in history}
        return [
            f"instruction {types.get(iid, '?')} ({iid}): acknowledged {self.acks[iid]!r}, "
            f"expected {self.expected[iid]!r}"
            for iid in self.instructions
            if iid in self.acks and self.acks[iid] != self.expected[iid]
        ]


def _print(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _progress(state: DemoState, expected: dict[str, int]) -> str:
    got = " ".join(
        f"{k}={state.counts.get(k, 0)}/{expected[k]}" for k in ("gridsquare", "foilhole", "micrograph")
    )
    acked = sum(1 for i in state.instructions if i in state.acks)
    return (
        f"[{time.monotonic() - state.started:5.1f}s] files {state.files_written}/{state.files_total}  "
        f"backend {got}  instructions acked {acked}/{len(state.instructions)}"
    )


def _summary(state: DemoState, expected: dict[str, int], history: list[dict[str, Any]], ok: bool) -> str:
    lines = ["", "em-agent demo summary", "=" * 58, f"{'files written':<32}{state.files_written:>10}", ""]
    lines.append(f"{'entity kind':<20}{'expected':>12}{'in backend':>14}{'':>4}")
    lines.append("-" * 58)
    for kind in KINDS:
        exp, got = expected[kind], state.counts.get(kind, 0)
        lines.append(f"{kind:<20}{exp:>12}{got:>14}{'ok' if exp == got else 'MISMATCH':>10}")
    lines.append("")
    lines.append(f"{'instruction':<38}{'ack status':>11}{'expected':>11}{'round trip':>11}")
    lines.append("-" * 71)
    for row in history:
        rtt = row.get("_rtt_ms")
        rtt_text = f"{rtt:.0f} ms" if isinstance(rtt, float) else "-"
        status = str(row.get("ack_status") or "none")
        want = state.expected.get(row["instruction_id"], "?")
        mark = "" if status == want else "  MISMATCH"
        lines.append(f"{row['instruction_type']:<38}{status:>11}{want:>11}{rtt_text:>11}{mark}")
    acked = sum(1 for i in state.instructions if i in state.acks)
    as_expected = sum(1 for i in state.instructions if state.acks.get(i) == state.expected[i])
    lines.append("-" * 71)
    lines.append(
        f"instructions issued {len(state.instructions)}, acknowledged {acked}, as expected {as_expected}"
    )
    lines.append(f"result: {'OK' if ok else 'FAILED'}")
    return "\n".join(lines)


async def run_demo(
    *,
    seed: int = 0,
    duration_s: float = 20.0,
    timeout_s: float = 120.0,
    keep: bool = False,
    out: TextIO,
    instructions: tuple[DemoInstruction, ...] = DEMO_INSTRUCTIONS,
) -> int:
    """Run the demo; returns 0 when the backend matches the manifest and every instruction was acknowledged
    with the status expected for it, 1 otherwise (with a line naming each mismatch)."""
    from testbed.backend import BackendServer
    from testbed.epu import GeneratorConfig, SessionGenerator, TimingMode

    work = Path(tempfile.mkdtemp(prefix="em-agent-demo-"))
    log_file = work / "agent.jsonl"
    with Path(os.devnull).open("w", encoding="utf-8") as devnull:  # noqa: ASYNC230 - opening /dev/null cannot block
        # The agent's JSON log goes to a file; the console shows the progress lines.
        handlers = configure_logging(LoggingConfig(level="INFO", file=log_file), stream=devnull)
        server = BackendServer(work / "backend.sqlite3", port=0).start()
        try:
            return await _run(
                server,
                work,
                seed,
                duration_s,
                timeout_s,
                out,
                instructions,
                GeneratorConfig,
                SessionGenerator,
                TimingMode,
            )
        finally:
            server.stop()
            # The demo's handlers write to a temporary folder and /dev/null: take them away with it.
            for handler in handlers:
                logging.getLogger().removeHandler(handler)
                handler.close()
            _print(out, f"agent log: {log_file}" if keep else "")
            if not keep:
                shutil.rmtree(work, ignore_errors=True)


async def _run(
    server: Any,
    work: Path,
    seed: int,
    duration_s: float,
    timeout_s: float,
    out: TextIO,
    instructions: tuple[DemoInstruction, ...],
    generator_config: Any,
    session_generator: Any,
    timing: Any,
) -> int:
    agent_id = "demo-microscope-01"
    session_id = server.create_session(agent_id, name="em-agent demo")
    epu_dir = work / "epu"
    epu_dir.mkdir()  # EPU creates its storage folder before the session starts; the agent watches it from then
    generator = session_generator(
        epu_dir,
        generator_config(preset="small", seed=seed, timing=timing.ACCELERATED, duration_s=duration_s),
    )
    settings = load_settings(
        None,
        {
            "agent_id": agent_id,
            "session_id": session_id,
            "state_dir": str(work / "state"),
            "backend": {"url": server.url, "heartbeat_interval_s": 5.0},
            "ingest": {"watch_dir": str(epu_dir), "status_interval_s": 5.0},
            "device": {"backend": "simulator"},
            "logging": {"status_interval_s": 5.0},
        },
    )
    assert settings.ingest is not None
    expected = generator.manifest.expected_counts(
        include_near_grid_bar=not settings.ingest.skip_near_grid_bar_holes
    ).as_dict()
    state = DemoState(files_total=generator.total)
    _print(out, f"em-agent demo: backend {server.url}, session {session_id}")
    _print(
        out,
        f"writing a simulated EPU session ({generator.total} file writes over ~{duration_s:.0f} s) to {epu_dir}",
    )
    _print(out, "expected entities: " + ", ".join(f"{k} {v}" for k, v in expected.items()))

    comp = compose(settings)
    daemon_task = asyncio.create_task(comp.daemon.run(), name="daemon")

    def on_write(event: Any) -> None:
        state.files_written += 1

    async def write_session() -> None:
        await generator.run_async(on_write)
        state.generator_done = True

    async def issue_instructions() -> None:
        for item in instructions:
            delay = item.at_s - (time.monotonic() - state.started)
            if delay > 0:
                await asyncio.sleep(delay)
            iid = await asyncio.to_thread(
                server.create_instruction, session_id, item.instruction_type, item.payload
            )
            state.expected[iid] = item.expected
            state.instructions.append(iid)

    gen_task = asyncio.create_task(write_session(), name="generator")
    instr_task = asyncio.create_task(issue_instructions(), name="instructions")
    deadline = time.monotonic() + timeout_s
    history: list[dict[str, Any]] = []
    ok = False
    mismatches: list[str] = []
    try:
        while time.monotonic() < deadline and not daemon_task.done():
            await asyncio.sleep(1.0)
            state.counts = await asyncio.to_thread(server.counts)
            history = await asyncio.to_thread(server.instructions, session_id)
            state.acks = {
                row["instruction_id"]: row["ack_status"] for row in history if row.get("ack_status")
            }
            _print(out, _progress(state, expected))
            mismatches = state.mismatches(history)
            if mismatches:
                break  # an acknowledgement is final: waiting longer cannot make the demo pass
            entities_ok = all(state.counts.get(k, 0) == v for k, v in expected.items())
            acks_ok = instr_task.done() and all(i in state.acks for i in state.instructions)
            if state.generator_done and entities_ok and acks_ok:
                ok = True
                break
    finally:
        for task in (gen_task, instr_task):
            await cancel_and_wait(task)
        comp.daemon.request_stop("demo finished")
        code = await daemon_task
        await comp.close()
    if mismatches:
        for line in mismatches:
            _print(out, f"status mismatch: {line}")
    elif ok:
        # Counts match; now every entity's key fields must match the manifest too.
        problems = await asyncio.to_thread(_field_check, server, generator.manifest, settings)
        for problem in problems:
            _print(out, f"field check: {problem}")
        ok = not problems
    elif code != 0:
        _print(out, f"the agent exited with code {code}; see its log")
    else:
        _print(out, f"timed out after {timeout_s:.0f} s before the backend matched the manifest")
    for row in history:
        row["_rtt_ms"] = _round_trip_ms(row)
    _print(out, _summary(state, expected, history, ok and code == 0))
    return 0 if ok and code == 0 else 1


def _field_check(server: Any, manifest: Any, settings: Any) -> list[str]:
    """Compare every entity's key fields in the backend with the manifest (not only the counts)."""
    from agent.ingest.identity import EntityKind, entity_uuid
    from testbed.epu import compare_with_backend

    trees: dict[str, Any] = {}
    missing: list[str] = []
    for key in manifest.acquisition_keys():
        try:
            trees[key] = server.acquisition_entities(entity_uuid(key, EntityKind.ACQUISITION, key))
        except Exception as exc:  # 404: the acquisition never reached the backend
            missing.append(f"acquisition {key} not in the backend ({exc})")
    if missing:
        return missing
    diff = compare_with_backend(
        manifest, trees, include_near_grid_bar=not settings.ingest.skip_near_grid_bar_holes
    )
    return [] if diff.ok else diff.summary().splitlines()


def _round_trip_ms(row: dict[str, Any]) -> float | None:
    from datetime import datetime

    try:
        created = datetime.fromisoformat(str(row["created_at"]))
        acked = datetime.fromisoformat(str(row["acknowledged_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (acked - created).total_seconds() * 1000.0


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(
        run_demo(
            seed=args.seed, duration_s=args.duration, timeout_s=args.timeout, keep=args.keep, out=sys.stdout
        )
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system locally: testbed backend + simulated EPU session + simulated SEM",
        description="Needs the 'testbed' extra. Exit code 0 only if the backend ends with exactly the entities "
        "of the simulated session and every instruction was acknowledged with the status expected for it.",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated session")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds over which the session is written"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (EPU files, logs, state)"
    )
    parser.set_defaults(func=_demo)
