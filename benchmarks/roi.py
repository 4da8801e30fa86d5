"""ROI relocation benchmark: save a two-level pyramid, reload the sample, find the ROI again.

Default (``--bench sdk``): the real device path. Each trial opens an in-process Semphony client over a fresh
SEM simulator (``SemphonyClient.from_backend(SimulatorBackend(...))``), attaches an ``ImagingDevice`` and
calls ``device.imaging.save_roi`` (l0 = 100 µm, l1 = 25 µm, 256 px, written to disk) and, after the sample is
reloaded, ``device.imaging.find_roi(roi_dir, stage_mode="cross_session")`` with the SDK defaults (gains 0.8).
The reload (``SemSimulator.reload_sample``) leaves the target up to half the l0 field of view away, rotated by
up to ±10°, with a magnification calibration error of up to ±5 %; the simulator adds stage positioning error
(0.5 µm per move), drift (0-10 nm/s, seeded direction; the simulator clock advances 2 s per frame so drift is
reproducible), defocus (its seeded focus offset) and shot noise (beam current 50-200 pA, dwell 0.5-2 µs).

``--bench stagebench``: the same trials on ``agent.roi.StageBench`` (simulator optics, no device layer).

Success: ``find_roi`` reports success and the true residuals are within ``px_tol`` (finest-level pixels),
``rot_tol_rad`` and ``scale_tol``. Target: ≥ 95 % success, median ≤ 3 iterations. Prints one JSON line; writes
``roi_convergence.png`` and ``roi_overlay.png`` (prefixed ``roi_stagebench_`` for the stage bench) under
``--out``. Trials run in ``--workers`` processes (default 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.devices.semphony import AcquisitionConfig, SemphonyClient
from agent.devices.simulator.config import SimulatorConfig
from agent.devices.simulator.sem import SemSimulator
from agent.devices.simulator_backend import SimulatorBackend
from agent.roi import (
    FindRoiResult,
    RoiImaging,
    RoiSpec,
    find_roi,
    load_level_image,
    save_roi,
)
from agent.roi.bench import StageBench
from semphony.systems import ImagingDevice

SPEC = RoiSpec(l0_fov_um=100.0, l1_fov_um=25.0)
HOME = (2.0, -3.0)
PX_TOL, ROT_TOL, SCALE_TOL = 15.0, 0.017, 0.02
SECONDS_PER_FRAME = 2.0  # simulated time per frame (scan, stage move, settling) that drift accumulates over


def _disturbance(seed: int) -> dict[str, float]:
    """The seeded reload: target offset (mm, specimen frame), rotation, magnification error, drift, noise."""
    rng = np.random.default_rng([seed, 0x201])
    radius = 0.5 * SPEC.l0_fov_um * 1e-3 * math.sqrt(rng.uniform())
    direction = rng.uniform(0, 2 * math.pi)
    return {
        "err_x_mm": radius * math.cos(direction),
        "err_y_mm": radius * math.sin(direction),
        "rotation_rad": math.radians(rng.uniform(-10, 10)),
        "magnification_error": float(rng.uniform(-0.05, 0.05)),
        "drift_nm_per_s": float(rng.uniform(0, 10)),
        "beam_current_pa": float(rng.uniform(50, 200)),
        "dwell_us": float(rng.uniform(0.5, 2.0)),
        "defocus_um": float(rng.uniform(0, 3)),
    }


def _placement(target_mm: tuple[float, float], d: dict[str, float]) -> tuple[float, float]:
    """Sample offset that puts ``target + err`` under the beam at HOME when the sample is rotated."""
    q = (target_mm[0] + d["err_x_mm"], target_mm[1] + d["err_y_mm"])
    c, s = math.cos(-d["rotation_rad"]), math.sin(-d["rotation_rad"])
    return (HOME[0] - (c * q[0] - s * q[1]), HOME[1] - (s * q[0] + c * q[1]))


def _summary(
    result: FindRoiResult, true_err_px: float, rot_err: float, scale_err: float, cpu: float
) -> dict[str, Any]:
    scale = SPEC.l0_fov_um / SPEC.l1_fov_um
    return {
        "success": result.success and true_err_px <= PX_TOL and rot_err <= ROT_TOL and scale_err <= SCALE_TOL,
        "reported": result.success,
        "iterations": result.iterations,
        "true_err_px": true_err_px,
        "measured_err_px": result.final_error_px,
        "rot_err_deg": math.degrees(rot_err),
        "scale_err": scale_err,
        "cpu_s": cpu,
        "trace": [t.error_px * (scale if t.level == "l0" else 1.0) for t in result.trace] + [true_err_px],
        "actions": [f"{t.level}:{t.action}" for t in result.trace],
    }


class _FrameClock:
    """Simulator clock that advances ``SECONDS_PER_FRAME`` per acquired frame (reproducible drift)."""

    def __init__(self) -> None:
        self.sem: SemSimulator | None = None

    def __call__(self) -> float:
        return 0.0 if self.sem is None else self.sem.counters["Acquire"] * SECONDS_PER_FRAME


def _sdk_trial(seed: int, size: int, keep_images: bool) -> dict[str, Any]:
    d = _disturbance(seed)
    config = SimulatorConfig(
        seed=seed,
        time_factor=0.0,
        positioning_error_um=0.5,
        drift_nm_per_s=d["drift_nm_per_s"],
        beam_current_pa=d["beam_current_pa"],
    )
    clock = _FrameClock()
    backend = SimulatorBackend(config, clock=clock)
    sim = backend.server.sem
    clock.sem = sim
    client = SemphonyClient.from_backend(backend)
    acq = AcquisitionConfig(width=size, height=size, dwell_us=d["dwell_us"])
    try:
        with client.run(f"roi-bench-{seed}").session() as session, tempfile.TemporaryDirectory() as tmp:
            device = ImagingDevice(client, device_slug=config.imaging_slug)
            device.attach(session)
            device.stage.move_to(*HOME)
            roi_dir = str(Path(tmp) / "roi")
            saved = device.imaging.save_roi(
                f"roi-{seed}", SPEC, config=acq, target_dir=roi_dir, inter_level_delay_s=0.0
            )
            target = sim.imaged_center_m()  # the specimen point at the centre of the saved l1 image
            saved_rot = math.radians(sim.geometries[2].values[0] - sim.position().r)
            sim.reload_sample(
                offset_mm=_placement((target[0] * 1e3, target[1] * 1e3), d),
                rotation_deg=math.degrees(d["rotation_rad"]),
                magnification_error=d["magnification_error"],
            )
            first_live = device.imaging.acquire(
                acq.model_copy(update={"fov_um": SPEC.l0_fov_um}), download=True
            ).to_array()
            cpu = time.process_time()
            result = device.imaging.find_roi(roi_dir, stage_mode="cross_session", base_config=acq)
            cpu = time.process_time() - cpu
            now = sim.imaged_center_m()
            true_err_px = math.hypot(now[0] - target[0], now[1] - target[1]) * 1e6 / (SPEC.l1_fov_um / size)
            live_rot = math.radians(sim.geometries[2].values[0] - sim.position().r) + sim.sample_rotation_rad
            rot_err = abs((live_rot - saved_rot + math.pi) % (2 * math.pi) - math.pi)
            scale_err = abs(result.fov_factor * (1 + sim.magnification_error) - 1)
            out = _summary(result, true_err_px, rot_err, scale_err, cpu)
            if keep_images:
                final = device.imaging.acquire(
                    acq.model_copy(update={"fov_um": SPEC.l1_fov_um * result.fov_factor}), download=True
                ).to_array()
                l0, l1 = (load_level_image(saved.level(name)) for name in ("l0", "l1"))
                out["images"] = (l0, first_live, l1, final)
            return out
    finally:
        client.close()


def _stagebench_trial(seed: int, size: int, keep_images: bool) -> dict[str, Any]:
    d = _disturbance(seed)
    bench = StageBench(seed=seed, stage_mm=HOME, positioning_error_um=0.5)
    imaging = RoiImaging(width=size, height=size, dwell_us=d["dwell_us"])
    roi = save_roi(bench, f"roi-{seed}", SPEC, config=imaging, inter_level_delay_s=0.0)
    target = bench.specimen_point_m(HOME)
    bench.placement_rotation_rad = d["rotation_rad"]
    bench.placement_offset_mm = _placement((target[0] * 1e3, target[1] * 1e3), d)
    bench.fov_error = d["magnification_error"]
    drift = d["drift_nm_per_s"] * SECONDS_PER_FRAME
    angle = float(np.random.default_rng([seed, 0x202]).uniform(0, 2 * math.pi))
    bench.drift_nm_per_frame = (drift * math.cos(angle), drift * math.sin(angle))
    bench.defocus_um = d["defocus_um"]
    first_live = bench.acquire_image(fov_um=SPEC.l0_fov_um, shape=(size, size), dwell_s=d["dwell_us"] * 1e-6)
    cpu = time.process_time()
    result = find_roi(bench, roi, stage_mode="cross_session")
    cpu = time.process_time() - cpu
    now = bench.specimen_point_m()
    true_err_px = math.hypot(now[0] - target[0], now[1] - target[1]) * 1e6 / (SPEC.l1_fov_um / size)
    rot_err = abs(bench.image_rotation_rad + d["rotation_rad"])
    scale_err = abs(result.fov_factor * (1 + bench.fov_error) - 1)
    out = _summary(result, true_err_px, rot_err, scale_err, cpu)
    if keep_images:
        final = bench.acquire_image(
            fov_um=SPEC.l1_fov_um * result.fov_factor, shape=(size, size), dwell_s=d["dwell_us"] * 1e-6
        )
        out["images"] = (roi._images["l0"], first_live, roi._images["l1"], final)
    return out


def _run_trial(job: tuple[str, int, int, bool]) -> dict[str, Any]:
    bench, seed, size, keep_images = job
    cv2.setNumThreads(1)  # one trial per process: OpenCV's own threads would only compete
    trial = _sdk_trial if bench == "sdk" else _stagebench_trial
    return trial(seed, size, keep_images)


def _u8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, (1, 99))
    out: np.ndarray = np.clip((img - lo) * 255.0 / max(hi - lo, 1e-6), 0, 255).astype(np.uint8)
    return out


def _overlay_figure(path: Path, trials: list[dict[str, Any]]) -> None:
    """Rows: saved l0 | live l0 after the reload | saved l1 (green) over the relocated live l1 (magenta)."""
    rows = []
    for t in trials:
        saved0, live0, saved1, final1 = (_u8(i) for i in t["images"])
        over = np.dstack([final1, saved1, final1])
        cells = [cv2.cvtColor(saved0, cv2.COLOR_GRAY2BGR), cv2.cvtColor(live0, cv2.COLOR_GRAY2BGR), over]
        row = np.hstack([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells])
        label = f"{t['iterations']} it, err {t['true_err_px']:.1f} px, rot {t['rot_err_deg']:.2f} deg"
        cv2.putText(row, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 255), 2, cv2.LINE_AA)
        rows.append(row)
    header = np.full((30, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(
        header,
        "saved l0 | live l0 after reload | saved l1 (green) over relocated l1 (magenta)",
        (8, 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.imwrite(str(path), np.vstack([header, *rows]))


def _trace_figure(path: Path, traces: list[list[float]]) -> None:
    w, h, m = 720, 480, 60
    img = np.full((h, w, 3), 255, np.uint8)
    n_x = max(len(t) for t in traces)
    lo, hi = -1.0, 3.5

    def xy(i: int, v: float) -> tuple[int, int]:
        y = (math.log10(min(max(v, 0.1), 10**hi)) - lo) / (hi - lo)
        return m + int((w - 2 * m) * i / max(n_x - 1, 1)), h - m - int((h - 2 * m) * y)

    for d in range(0, 4):
        y = xy(0, 10.0**d)[1]
        cv2.line(img, (m, y), (w - m, y), (225, 225, 225), 1)
        cv2.putText(img, f"1e{d}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i in range(n_x):
        x = xy(i, 1.0)[0]
        cv2.putText(img, str(i), (x - 4, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    tol = xy(0, PX_TOL)[1]
    cv2.line(img, (m, tol), (w - m, tol), (0, 0, 255), 1)
    rng = np.random.default_rng(0)
    for t in traces:
        color = tuple(int(c) for c in rng.integers(40, 200, 3))
        pts = np.array([xy(i, v) for i, v in enumerate(t)], np.int32)
        cv2.polylines(img, [pts], False, color, 1, cv2.LINE_AA)
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    title = "find_roi: target error (l1 px) per iteration; last point = true error"
    cv2.putText(img, title, (m, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "red: px_tol", (w - 160, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
    cv2.imwrite(str(path), img)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", choices=("sdk", "stagebench"), default="sdk")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    if args.trials < 1 or args.workers < 1:
        parser.error("--trials and --workers must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    n_images = min(4, args.trials)
    jobs = [(args.bench, args.seed + k, args.size, k < n_images) for k in range(args.trials)]
    trials: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for k, trial in enumerate(pool.map(_run_trial, jobs, chunksize=4)):
            trials.append(trial)
            if (k + 1) % 20 == 0:
                print(f"roi: {k + 1}/{args.trials} trials, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    its = np.array([t["iterations"] for t in trials])
    err = np.array([t["true_err_px"] for t in trials])
    actions: dict[str, int] = {}
    for t in trials:
        key = " ".join(t["actions"])
        actions[key] = actions.get(key, 0) + 1
    prefix = "roi_" if args.bench == "sdk" else "roi_stagebench_"
    overlay, convergence = args.out / f"{prefix}overlay.png", args.out / f"{prefix}convergence.png"
    _overlay_figure(overlay, trials[:n_images])
    _trace_figure(convergence, [t["trace"] for t in trials[:60]])
    report = {
        "benchmark": "roi",
        "bench": args.bench,
        "trials": args.trials,
        "mode": "cross_session",
        "params": "find_roi defaults (gains 0.8, px_tol 15, rot_tol_rad 0.017, scale_tol 0.02)",
        "success_rate": float(np.mean([t["success"] for t in trials])),
        "reported_success_rate": float(np.mean([t["reported"] for t in trials])),
        "iterations_median": float(np.median(its)),
        "iterations_p95": float(np.percentile(its, 95)),
        "iterations_max": int(its.max()),
        "final_error_px_median": float(np.median(err)),
        "final_error_px_p95": float(np.percentile(err, 95)),
        "final_rotation_err_deg_p95": float(np.percentile([t["rot_err_deg"] for t in trials], 95)),
        "final_scale_err_p95": float(np.percentile([t["scale_err"] for t in trials], 95)),
        "cpu_s_per_trial_median": float(np.median([t["cpu_s"] for t in trials])),
        "action_sequences": dict(sorted(actions.items(), key=lambda kv: -kv[1])[:5]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "figures": [str(convergence), str(overlay)],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
