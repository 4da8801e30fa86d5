"""``em-agent autofocus validate``: may the learned autofocus be used on this instrument?

It opens the configured device (``device.backend``, any backend), runs seeded defocus trials with the learned
corrector and the classical sweep from the same starts (:mod:`agent.autofocus.validate`), prints the two side by
side with the verdict, writes the traces as a PNG and records the verdict in the state folder, where
``method = "auto"`` reads it (:mod:`agent.autofocus.policy`). On the simulator the reference is its true focus;
elsewhere it is the focus found at the start, so focus the instrument by hand first.

Exit codes: 0 when the trials ran and the verdict was recorded (whether or not it enables the learned corrector;
the verdict line says which), 1 when the device could not be used or no trial produced a result, 2 usage
error, 78 configuration error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.commands.common import add_config_argument, settings_from_args
from agent.settings import Settings

if TYPE_CHECKING:
    from agent.autofocus.policy import MethodStats
    from agent.autofocus.validate import ValidationOptions, ValidationReport

EXIT_FAILURE = 1
EXIT_CONFIG = 78

__all__ = ["format_report", "register", "validate"]


def format_report(report: ValidationReport, png: Path | None, record: Path | None, notes: list[str]) -> str:
    """The side-by-side table, the verdict and where it was written."""
    from agent.autofocus.validate import METHODS

    v, o = report.verdict, report.options

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows: list[tuple[str, Callable[[MethodStats], str]]] = [
        ("in focus", lambda s: f"{s.successes}/{s.trials} ({s.success_rate:.0%})"),
        ("images, median", lambda s: fmt(s.images_median, "g")),
        ("time per trial, median (s)", lambda s: fmt(s.time_median_s, ".2f")),
        ("final |dWD|, median (um)", lambda s: fmt(s.final_wd_err_um_median, ".2f")),
        ("final |dstig|, median", lambda s: fmt(s.final_stig_err_median, ".3f")),
        ("errors", lambda s: str(s.errors)),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [
        f"instrument: {v.backend}: {v.instrument}",
        f"reference focus: wd {report.reference.wd_mm:.6f} mm, stig ({report.reference.stigm_x:.4f}, "
        f"{report.reference.stigm_y:.4f}) ({report.reference_source})",
        f"trials: {v.trials} (seed {v.seed}), start within +/-{o.wd_offset_um:g} um WD and +/-{o.stig_offset:g} "
        f"stigmator units; success: final |dWD| < {o.wd_tol_um:g} um and |dstig| < {o.stig_tol:g}",
        *notes,
        "",
        f"{'':<{width}}{METHODS[0]:>14}{METHODS[1]:>14}",
    ]
    for label, cell in rows:
        lines.append(
            f"{label:<{width}}{cell(report.stats(METHODS[0])):>14}{cell(report.stats(METHODS[1])):>14}"
        )
    for method in METHODS:
        first = report.stats(method).first_error
        if first:
            lines.append(f"first {method} error: {first}")
    lines += ["", f"verdict: learned autofocus {v.reason}"]
    if png is not None:
        lines.append(f"traces: {png}")
    if record is not None:
        lines.append(f"recorded: {record} (method 'auto' follows it on this instrument)")
    return "\n".join(lines)


def validate(
    settings: Settings, options: ValidationOptions, *, png: Path | None = None, as_json: bool = False
) -> int:
    """Run the validation on the configured device; print, plot, record. Returns the exit code."""
    from agent.autofocus.plot import plot_validation
    from agent.autofocus.policy import record_verdict
    from agent.autofocus.validate import FocusPoint, TrialOutcome, run_validation
    from agent.devices.errors import SemphonyApiError
    from agent.devices.factory import create_client, true_focus
    from agent.devices.guardrails import ImagingGuardrails
    from agent.devices.semphony import ImagingDevice

    device = settings.device
    if importlib.util.find_spec("matplotlib") is None:
        # Checked first: finding out after an hour of trials that the figure cannot be drawn would be worse.
        print("em-agent autofocus validate: needs matplotlib: install em-agent[autofocus]", file=sys.stderr)
        return EXIT_FAILURE
    if device.backend == "none":
        print(
            "em-agent autofocus validate: no device configured (set device.backend or --device)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        client = create_client(
            device.backend,
            url=device.url,
            api_key=device.resolved_api_key(),
            simulator=device.simulator_config(),
            openfibsem=device.openfibsem,
            device_slug=device.device_slug,
        )
    except ValueError as exc:
        print(f"em-agent autofocus validate: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def progress(outcome: TrialOutcome) -> None:
        state = "in focus" if outcome.success else "FAILED"
        detail = f": {outcome.error}" if outcome.error else ""
        print(
            f"trial {outcome.trial + 1}/{options.trials} {outcome.method}: {state}, {outcome.images} images, "
            f"{outcome.elapsed_s:.1f} s{detail}",
            file=sys.stderr,
        )

    notes: list[str] = []
    try:
        with client.run(f"{device.run_name}-autofocus-validate").session(
            guardrails=ImagingGuardrails()
        ) as session:
            sem = ImagingDevice(client, device_slug=device.device_slug)
            sem.attach(session)
            key = sem.instrument_key()
            declined = sem.unsupported.get("autofocus")
            if declined:
                notes.append(f"note: the device declines autofocus: {declined}")
            reference: FocusPoint | None = None
            source = "the focus found at the start: focus the instrument by hand before validating"
            truth = true_focus(client.backend)
            if truth is not None:
                reference = FocusPoint(wd_mm=truth[0], stigm_x=truth[1], stigm_y=truth[2])
                source = "the simulator's true focus"
            report = run_validation(
                sem.imaging.focus_ops(),
                key,
                options,
                reference=reference,
                reference_source=source,
                progress=progress,
            )
    except SemphonyApiError as exc:
        print(f"em-agent autofocus validate: the device failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        client.close()
    if all(o.error is not None for o in report.outcomes):
        print(
            "em-agent autofocus validate: no trial produced a result; nothing recorded. First error: "
            f"{report.outcomes[0].error}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{key.backend}-{key.instrument}")
    target = png or settings.state_dir / "autofocus" / f"validation-{safe}-{stamp}.png"
    written = plot_validation(report, target)
    report.verdict.png = str(written)
    record = record_verdict(settings.state_dir, report.verdict)
    if as_json:
        print(json.dumps({**report.model_dump(mode="json"), "record": str(record)}))
    else:
        print(format_report(report, written, record, notes))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from agent.autofocus.models import AutofocusConfig
    from agent.autofocus.validate import ValidationOptions

    settings = settings_from_args(args, {"device.backend": args.device, "state_dir": args.state_dir})
    if settings is None:
        return EXIT_CONFIG
    overrides: dict[str, Any] = {"trials": args.trials, "seed": args.seed}
    if args.wd_offset_um is not None:
        overrides["wd_offset_um"] = args.wd_offset_um
    if args.stig_offset is not None:
        overrides["stig_offset"] = args.stig_offset
    autofocus: dict[str, Any] = {}
    if args.settle_s is not None:
        autofocus["settle_s"] = args.settle_s
    try:
        options = ValidationOptions(**overrides, autofocus=AutofocusConfig(**autofocus))
    except ValueError as exc:
        print(f"em-agent autofocus validate: {exc}", file=sys.stderr)
        return 2
    return validate(settings, options, png=args.png, as_json=args.json)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``autofocus validate``."""
    parser = subparsers.add_parser("autofocus", help="autofocus tools (validate the learned corrector)")
    commands = parser.add_subparsers(dest="autofocus_command", metavar="COMMAND", required=True)
    v = commands.add_parser(
        "validate",
        help="learned vs classical autofocus on the configured device; records whether 'auto' may use learned",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(v)
    v.add_argument(
        "--device", default=None, choices=["simulator", "semphony", "openfibsem"], help="device.backend"
    )
    v.add_argument(
        "--state-dir", type=Path, default=None, metavar="DIR", help="where the verdict is recorded"
    )
    v.add_argument("--trials", type=int, default=20, help="trials (default 20); each runs both methods")
    v.add_argument("--seed", type=int, default=0, help="seeds the start offsets (default 0)")
    v.add_argument(
        "--wd-offset-um", type=float, default=None, help="start WD offsets within +/- this (50 um)"
    )
    v.add_argument(
        "--stig-offset", type=float, default=None, help="start stigmator offsets within +/- this (1)"
    )
    v.add_argument("--settle-s", type=float, default=None, help="wait after each focus change (0.25 s)")
    v.add_argument(
        "--png", type=Path, default=None, help="traces figure (default: in <state_dir>/autofocus/)"
    )
    v.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    v.set_defaults(func=_validate)
