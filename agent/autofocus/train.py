"""Train the learned focus corrector from simulator data and write the weights into the package.

Run ``python -m agent.autofocus.train`` (needs the ``autofocus`` extra). It renders WD ± sigma patch pairs with
:mod:`agent.devices.simulator.optics` (see :mod:`agent.autofocus.dataset`), trains :class:`FocusNet` on the CPU
with a Laplace likelihood, and writes ``agent/autofocus/weights/deepfocus_v1.pt`` with the training spec and
the validation errors. Progress goes to stderr; the last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agent.autofocus.dataset import TrainingSpec, generate_samples
from agent.autofocus.network import ARCHITECTURE, TARGET_SCALE, FocusNet, laplace_nll, save_weights
from agent.devices.simulator.optics import DEFAULT_OPTICS

__all__ = ["DEFAULT_WEIGHTS", "augment", "main", "train"]

#: Where the shipped weights live.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "deepfocus_v1.pt"

# The eight symmetries of the square and how each maps the stigmator target (scan-frame astigmatism with the
# stigmator axes along the scan axes): a mirror changes the sign of stig y, a transpose that of stig x.
_SYMMETRIES = (
    (False, False, 1.0, 1.0),
    (True, False, 1.0, -1.0),
    (False, True, -1.0, 1.0),
    (True, True, -1.0, -1.0),
)


def augment(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random mirror/transpose to the whole batch and adjust the stigmator targets accordingly."""
    k = int(torch.randint(0, len(_SYMMETRIES), (1,), generator=generator))
    flip, transpose, sx, sy = _SYMMETRIES[k]
    if transpose:
        x = x.transpose(2, 3)
    if flip:
        x = x.flip(3)
    scale = torch.tensor([1.0, sx, sy], dtype=y.dtype)
    return x.contiguous(), y * scale


def _errors(model: FocusNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    scale = torch.tensor(TARGET_SCALE)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 512])[:, :3] for i in range(0, len(x), 512)]) * scale
    err = (pred - y).abs()
    near = y[:, 0].abs() < 8.0
    return {
        "mae_wd_um": float(err[:, 0].mean()),
        "mae_wd_near_um": float(err[near, 0].mean()) if near.any() else math.nan,
        "rel_wd_far": float((err[~near, 0] / y[~near, 0].abs()).median()) if (~near).any() else math.nan,
        "mae_stig": float(err[:, 1:].mean()),
        "mae_stig_near": float(err[near, 1:].mean()) if near.any() else math.nan,
    }


def train(
    *,
    views: int,
    val_views: int,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    width: int,
    spec: TrainingSpec,
    log: bool = True,
) -> tuple[FocusNet, dict[str, object]]:
    """Generate data, train, and return the model and its metadata (spec, validation errors, timings)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x_np, y_np = generate_samples(views, rng, spec)
    # Validation views come from specimens never used for training.
    xv_np, yv_np = generate_samples(val_views, rng, spec, specimen_seed_base=900_000)
    t_data = time.perf_counter() - t0
    if log:
        print(f"data: {len(x_np)} train / {len(xv_np)} val patch pairs in {t_data:.0f} s", file=sys.stderr)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    xv, yv = torch.from_numpy(xv_np), torch.from_numpy(yv_np)
    scale = torch.tensor(TARGET_SCALE)
    model = FocusNet(width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb, yb = augment(x[idx], y[idx], gen)
            loss = laplace_nll(model(xb), yb / scale)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log:
            errs = _errors(model, xv, yv)
            print(
                f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.3f} "
                + " ".join(f"{k}={v:.3f}" for k, v in errs.items())
                + f" ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
    errors = _errors(model, xv, yv)
    meta: dict[str, object] = {
        "architecture": ARCHITECTURE,
        "width": width,
        "target_scale": list(TARGET_SCALE),
        "spec": spec.as_dict(),
        "optics": {
            "convergence_semi_angle_rad": DEFAULT_OPTICS.convergence_semi_angle_rad,
            "astig_um_per_unit": DEFAULT_OPTICS.astig_um_per_unit,
        },
        "train": {
            "views": views,
            "val_views": val_views,
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "seed": seed,
        },
        "validation": errors,
        "data_s": round(t_data, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    return model, meta


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m agent.autofocus.train", description=__doc__)
    # Defaults reproduce the shipped weights (about 15 minutes on 2 busy cores, 6 on 2 idle ones).
    parser.add_argument("--views", type=int, default=2500, help="training views (4 patch pairs each)")
    parser.add_argument("--val-views", type=int, default=250, help="validation views")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16, help="channels of the first layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, meta = train(
        views=args.views,
        val_views=args.val_views,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        width=args.width,
        spec=TrainingSpec(),
    )
    save_weights(model, args.out, meta)
    print(json.dumps({"weights": str(args.out), "bytes": args.out.stat().st_size, **meta}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
