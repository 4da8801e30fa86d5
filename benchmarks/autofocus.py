"""Autofocus benchmark: learned corrector vs classical baseline on the SEM simulator.

200 seeded trials (default). Each trial builds the device layer's simulator (``SemSimulator``, the physics
behind the in-process Semphony API) with its seed, sets the working distance ``U(-50, 50)`` µm and the
stigmators ``U(-2, 2)`` units per axis away from the hidden optimum, and runs ``run_autofocus``. Success: final
``|ΔWD| < 1 µm`` and both ``|Δstig| < --stig-tol``. ``--path sdk`` goes through ``ImagingDevice.imaging.autofocus``
(PNG transfer included, slower); the default ``direct`` calls the simulator in process.

Prints one JSON line (progress on stderr) and writes convergence-trace PNGs under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.autofocus import AutofocusConfig, AutofocusResult, run_autofocus
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.sem import SemSimulator


class SimFocusOps:
    """FocusOps straight over the simulator (its coroutines run on a private loop)."""

    def __init__(self, sim: SemSimulator) -> None:
        self.sim = sim
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def get_focus_params(self) -> Mapping[str, float]:
        return self.sim.focus_params()

    def set_focus_params(
        self, wd_mm: float | None = None, stigm_x: float | None = None, stigm_y: float | None = None
    ) -> object:
        return self.loop.run_until_complete(self.sim.set_focus_params(wd_mm, stigm_x, stigm_y))

    def acquire_image(self, *, fov_um: float, shape: tuple[int, int], dwell_s: float) -> np.ndarray:
        frame = self.loop.run_until_complete(
            self.sim.acquire(width=shape[1], height=shape[0], dwell_us=dwell_s * 1e6, fov_um=fov_um)
        )
        return frame.image


def _start(seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng([seed, 0xAF])
    return float(rng.uniform(-50, 50)), float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2))


def _trial(seed: int, config: AutofocusConfig, path: str) -> dict[str, Any]:
    dwd, dsx, dsy = _start(seed)
    sim_config = SimulatorConfig(seed=seed, time_factor=0.0, drift_nm_per_s=0.0)
    if path == "sdk":
        from semphony import ImagingDevice, SemphonyClient

        client = SemphonyClient.simulated(sim_config)
        try:
            with client.run(f"af-{seed}").session() as session:
                sem = ImagingDevice(client, device_slug=sim_config.imaging_slug)
                sem.attach(session)
                sim: SemSimulator = client.backend.server.sem  # type: ignore[attr-defined]
                wd_true, ideal = sim.true_focus_wd_mm(), sim.ideal_stigmator
                sem.imaging.set_focus_params(wd_true + dwd * 1e-3, ideal[0] + dsx, ideal[1] + dsy)
                cpu = time.process_time()
                result = sem.imaging.autofocus(config)
                cpu = time.process_time() - cpu
                final = sim.focus_params()
        finally:
            client.close()
    else:
        sim = SemSimulator(sim_config)
        ops = SimFocusOps(sim)
        try:
            wd_true, ideal = sim.true_focus_wd_mm(), sim.ideal_stigmator
            ops.set_focus_params(wd_true + dwd * 1e-3, ideal[0] + dsx, ideal[1] + dsy)
            cpu = time.process_time()
            result = run_autofocus(ops, config)
            cpu = time.process_time() - cpu
            final = sim.focus_params()
        finally:
            ops.close()
    return _summarise(result, cpu, final, wd_true, ideal, (dwd, dsx, dsy))


def _summarise(
    result: AutofocusResult,
    cpu: float,
    final: Mapping[str, float],
    wd_true: float,
    ideal: tuple[float, float],
    start: tuple[float, float, float],
) -> dict[str, Any]:
    wd_err = [(it.wd_mm - wd_true) * 1e3 for it in result.trace] + [(final["wd_mm"] - wd_true) * 1e3]
    stig_err = [math.hypot(it.stigm_x - ideal[0], it.stigm_y - ideal[1]) for it in result.trace]
    stig_err.append(math.hypot(final["stigm_x"] - ideal[0], final["stigm_y"] - ideal[1]))
    return {
        "start": start,
        "iterations": result.iterations,
        "images": result.images,
        "converged": result.converged,
        "cpu_per_iter_s": cpu / max(result.iterations, 1),
        "wd_err_um": wd_err,
        "stig_err": stig_err,
        "final_dx": final["stigm_x"] - ideal[0],
        "final_dy": final["stigm_y"] - ideal[1],
    }


def _stats(trials: list[dict[str, Any]], stig_tol: float) -> dict[str, Any]:
    ok = [
        abs(t["wd_err_um"][-1]) < 1.0 and max(abs(t["final_dx"]), abs(t["final_dy"])) < stig_tol
        for t in trials
    ]
    its = np.array([t["iterations"] for t in trials])
    imgs = np.array([t["images"] for t in trials])
    wd = np.array([abs(t["wd_err_um"][-1]) for t in trials])
    st = np.array([t["stig_err"][-1] for t in trials])
    return {
        "trials": len(trials),
        "success_rate": float(np.mean(ok)),
        "success_within_3_iters": float(
            np.mean([o and t["iterations"] <= 3 for o, t in zip(ok, trials, strict=False)])
        ),
        "iterations_median": float(np.median(its)),
        "iterations_p95": float(np.percentile(its, 95)),
        "images_median": float(np.median(imgs)),
        "images_p95": float(np.percentile(imgs, 95)),
        "cpu_ms_per_iteration_median": float(np.median([t["cpu_per_iter_s"] for t in trials]) * 1e3),
        "final_wd_err_um_median": float(np.median(wd)),
        "final_wd_err_um_p95": float(np.percentile(wd, 95)),
        "final_stig_err_median": float(np.median(st)),
        "final_stig_err_p95": float(np.percentile(st, 95)),
    }


def _plot_traces(
    path: Path, title: str, series: list[list[float]], y_label: str, y_min: float, y_max: float
) -> None:
    """Log-scale convergence traces (one polyline per trial) drawn with OpenCV."""
    w, h, m = 720, 480, 60
    img = np.full((h, w, 3), 255, np.uint8)
    n_x = max(len(s) for s in series)
    lo, hi = math.log10(y_min), math.log10(y_max)

    def xy(i: int, v: float) -> tuple[int, int]:
        x = m + int((w - 2 * m) * i / max(n_x - 1, 1))
        y = h - m - int((h - 2 * m) * (math.log10(min(max(v, y_min), y_max)) - lo) / (hi - lo))
        return x, y

    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        y = xy(0, 10.0**decade)[1]
        cv2.line(img, (m, y), (w - m, y), (225, 225, 225), 1)
        cv2.putText(img, f"1e{decade}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i in range(n_x):
        x = xy(i, y_min)[0]
        cv2.putText(img, str(i), (x - 4, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    rng = np.random.default_rng(0)
    for s in series:
        color = tuple(int(c) for c in rng.integers(40, 200, 3))
        pts = np.array([xy(i, abs(v)) for i, v in enumerate(s)], np.int32)
        cv2.polylines(img, [pts], False, color, 1, cv2.LINE_AA)
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    cv2.putText(img, title, (m, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"{y_label} vs iteration (0 = start)", (m, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
    )
    cv2.imwrite(str(path), img)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="first simulator seed")
    parser.add_argument("--methods", default="learned,classical")
    parser.add_argument("--path", choices=("direct", "sdk"), default="direct")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--dwell-us", type=float, default=2.0, help="dwell of the focus images")
    parser.add_argument("--classical-iters", type=int, default=3, help="rounds of the classical baseline")
    # 0.2 units = 2 µm line-focus separation (±1 µm line foci): the same focus spread as the 1 µm WD criterion.
    parser.add_argument("--stig-tol", type=float, default=0.2, help="success tolerance per stigmator axis")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "autofocus", "trials": args.trials, "path": args.path}
    for method in args.methods.split(","):
        config = AutofocusConfig(
            method=method,
            settle_s=0.0,
            image_size_px=args.image_size,
            dwell_us=args.dwell_us,
            max_iters=5 if method == "learned" else args.classical_iters,
        )
        trials = []
        t0 = time.perf_counter()
        for k in range(args.trials):
            trials.append(_trial(args.seed + k, config, args.path))
            if (k + 1) % 20 == 0:
                print(
                    f"{method}: {k + 1}/{args.trials} trials, {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                )
        report[method] = _stats(trials, args.stig_tol) | {"wall_s": round(time.perf_counter() - t0, 1)}
        shown = trials[:40]
        _plot_traces(
            args.out / f"autofocus_{method}_wd.png",
            f"{method}: |WD error| (um), 40 trials",
            [t["wd_err_um"] for t in shown],
            "|WD error| um",
            0.01,
            100.0,
        )
        _plot_traces(
            args.out / f"autofocus_{method}_stig.png",
            f"{method}: |stig error| (units), 40 trials",
            [t["stig_err"] for t in shown],
            "|stig error|",
            0.001,
            5.0,
        )
    if "learned" in report and "classical" in report:
        report["images_ratio_classical_over_learned"] = report["classical"]["images_median"] / max(
            report["learned"]["images_median"], 1.0
        )
    report["figures"] = sorted(str(p) for p in args.out.glob("autofocus_*.png"))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
