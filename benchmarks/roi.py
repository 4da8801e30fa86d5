"""ROI relocation benchmark: save a two-level pyramid, disturb the sample, find it again.

200 seeded trials (default) on ``agent.roi.StageBench`` (the simulator optics plus a stage with hidden sample
placement). Each trial saves an ROI (l0 = 100 µm, l1 = 25 µm, 256 px), then reloads the sample with an unknown
offset of up to half the l0 field of view, a rotation of up to ±10° and a magnification (scale) error of up to
±5 %, with stage positioning error (0.5 µm), drift between frames, defocus and shot noise, and runs
``find_roi(stage_mode="cross_session")`` with the SDK defaults. Success: ``find_roi`` reports success and the
true residuals are within ``px_tol`` (finest-level pixels), ``rot_tol_rad`` and ``scale_tol``.

Why the stage bench and not the Semphony simulator: relocation must be tested against a sample rotation and a
magnification error, which the device simulator does not model (it has no sample placement transform), and its
SDK adapter does not yet expose scan-rotation control. Prints one JSON line; writes PNG figures under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.roi import RoiImaging, RoiSpec, StageBench, find_roi, save_roi

SPEC = RoiSpec(l0_fov_um=100.0, l1_fov_um=25.0)
HOME = (2.0, -3.0)
PX_TOL, ROT_TOL, SCALE_TOL = 15.0, 0.017, 0.02


def _trial(seed: int, size: int, gains: dict[str, float]) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 0x201])
    bench = StageBench(seed=seed, stage_mm=HOME, positioning_error_um=0.5)
    imaging = RoiImaging(width=size, height=size, dwell_us=1.0)
    roi = save_roi(bench, f"roi-{seed}", SPEC, config=imaging, inter_level_delay_s=0.0)
    target = bench.specimen_point_m(HOME)
    # Reload the sample: offset up to half the overview FOV, rotation, scale error, drift, defocus, noise.
    radius = 0.5 * SPEC.l0_fov_um * 1e-3 * math.sqrt(rng.uniform())
    direction = rng.uniform(0, 2 * math.pi)
    err = (radius * math.cos(direction), radius * math.sin(direction))
    rot = math.radians(rng.uniform(-10, 10))
    q = (target[0] * 1e3 + err[0], target[1] * 1e3 + err[1])
    c, s = math.cos(-rot), math.sin(-rot)
    bench.placement_rotation_rad = rot
    bench.placement_offset_mm = (HOME[0] - (c * q[0] - s * q[1]), HOME[1] - (s * q[0] + c * q[1]))
    bench.fov_error = float(rng.uniform(-0.05, 0.05))
    bench.drift_nm_per_frame = (float(rng.normal(0, 20)), float(rng.normal(0, 20)))
    bench.defocus_um = float(rng.uniform(0, 3))
    first_live = bench.acquire_image(fov_um=SPEC.l0_fov_um, shape=(size, size), dwell_s=1e-6)
    cpu = time.process_time()
    result = find_roi(
        bench,
        roi,
        stage_mode="cross_session",
        gain_xy=gains["gain_xy"],
        gain_rot=gains["gain_rot"],
        gain_fov=gains["gain_fov"],
    )
    cpu = time.process_time() - cpu
    now = bench.specimen_point_m()
    finest_px_um = SPEC.l1_fov_um / size
    true_err_px = math.hypot(now[0] - target[0], now[1] - target[1]) * 1e6 / finest_px_um
    rot_err = abs(bench.image_rotation_rad + rot)
    scale_err = abs(result.fov_factor * (1 + bench.fov_error) - 1)
    final_live = bench.acquire_image(
        fov_um=SPEC.l1_fov_um * result.fov_factor, shape=(size, size), dwell_s=1e-6
    )
    return {
        "success": result.success and true_err_px <= PX_TOL and rot_err <= ROT_TOL and scale_err <= SCALE_TOL,
        "reported": result.success,
        "iterations": result.iterations,
        "true_err_px": true_err_px,
        "measured_err_px": result.final_error_px,
        "rot_err_deg": math.degrees(rot_err),
        "scale_err": scale_err,
        "cpu_s": cpu,
        "trace": [
            t.error_px * (SPEC.l0_fov_um / SPEC.l1_fov_um if t.level == "l0" else 1.0) for t in result.trace
        ]
        + [true_err_px],
        "images": (roi._images["l0"], first_live, roi._images["l1"], final_live),
    }


def _u8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, (1, 99))
    out: np.ndarray = np.clip((img - lo) * 255.0 / max(hi - lo, 1e-6), 0, 255).astype(np.uint8)
    return out


def _overlay_figure(path: Path, trials: list[dict[str, Any]]) -> None:
    """Rows: saved l0 | live l0 before | saved l1 (green) over relocated live l1 (magenta)."""
    rows = []
    for t in trials:
        saved0, live0, saved1, final1 = (_u8(i) for i in t["images"])
        over = np.dstack([final1, saved1, final1])
        cells = [cv2.cvtColor(saved0, cv2.COLOR_GRAY2BGR), cv2.cvtColor(live0, cv2.COLOR_GRAY2BGR), over]
        row = np.hstack([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells])
        label = f"{t['iterations']} it, err {t['true_err_px']:.1f} px"
        cv2.putText(row, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA)
        rows.append(row)
    cv2.imwrite(str(path), np.vstack(rows))


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
        cv2.polylines(
            img, [np.array([xy(i, v) for i, v in enumerate(t)], np.int32)], False, color, 1, cv2.LINE_AA
        )
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    cv2.putText(
        img,
        "find_roi: target error (finest-level px) per iteration; last = true",
        (m, 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(img, "red: px_tol", (w - 160, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
    cv2.imwrite(str(path), img)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--gain-xy", type=float, default=0.8, help="find_roi gain_xy (SDK default 0.8)")
    parser.add_argument("--gain-rot", type=float, default=0.8)
    parser.add_argument("--gain-fov", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    gains = {"gain_xy": args.gain_xy, "gain_rot": args.gain_rot, "gain_fov": args.gain_fov}
    args.out.mkdir(parents=True, exist_ok=True)
    trials = []
    t0 = time.perf_counter()
    for k in range(args.trials):
        trials.append(_trial(args.seed + k, args.size, gains))
        if (k + 1) % 20 == 0:
            print(f"roi: {k + 1}/{args.trials} trials, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    its = np.array([t["iterations"] for t in trials])
    err = np.array([t["true_err_px"] for t in trials])
    report = {
        "benchmark": "roi",
        "trials": args.trials,
        "mode": "cross_session",
        "gains": gains,
        "success_rate": float(np.mean([t["success"] for t in trials])),
        "reported_success_rate": float(np.mean([t["reported"] for t in trials])),
        "iterations_median": float(np.median(its)),
        "iterations_p95": float(np.percentile(its, 95)),
        "final_error_px_median": float(np.median(err)),
        "final_error_px_p95": float(np.percentile(err, 95)),
        "final_rotation_err_deg_p95": float(np.percentile([t["rot_err_deg"] for t in trials], 95)),
        "final_scale_err_p95": float(np.percentile([t["scale_err"] for t in trials], 95)),
        "cpu_s_per_trial_median": float(np.median([t["cpu_s"] for t in trials])),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    _overlay_figure(args.out / "roi_overlay.png", trials[:4])
    _trace_figure(args.out / "roi_convergence.png", [t["trace"] for t in trials[:60]])
    report["figures"] = [str(args.out / "roi_overlay.png"), str(args.out / "roi_convergence.png")]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
