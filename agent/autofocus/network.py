"""The learned focus/stigmation corrector: a small CNN over WD ± sigma patch pairs (needs torch).

Architecture in the spirit of DeepFocus (sem-reference §6.2): an image encoder over the two-image stack and a
regression head. It predicts, per patch pair, the three corrections (WD µm, stig x, stig y; in scaled units)
and a log scale for each (a Laplace likelihood), so the consensus over patches can weight confident patches
more. Import this module only where torch is known to be available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "ARCHITECTURE",
    "TARGET_SCALE",
    "FocusNet",
    "laplace_nll",
    "load_weights",
    "log_spectra",
    "save_weights",
]

#: Version tag stored with the weights; bump it when the layers change.
ARCHITECTURE = "focusnet-v4"
#: Network outputs are corrections divided by these (WD µm, stig x, stig y): similar magnitudes for the loss.
TARGET_SCALE = (10.0, 0.5, 0.5)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _block(c_in: int, c_out: int, k: int, depth: int) -> nn.Sequential:
    layers = _conv(c_in, c_out, k)
    for _ in range(depth - 1):
        layers += _conv(c_out, c_out, 3)
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class FocusNet(nn.Module):
    """``(N, 4, P, P)`` inputs (fine pair, coarse pair) -> ``(N, 6)``: three scaled corrections, three log scales."""

    def __init__(self, width: int = 16) -> None:
        """Build the layers; ``width`` is the channel count of the first block."""
        super().__init__()
        # A strided 5x5 first layer still sees every pixel (blur lives at the finest scale) but quarters the
        # cost of everything after it: this keeps CPU training to minutes.
        self.encoder = nn.Sequential(
            *_conv(10, width, 5, stride=2),
            _block(width, 2 * width, 3, 2),
            _block(2 * width, 3 * width, 3, 2),
            _block(3 * width, 4 * width, 3, 2),
        )
        # Flatten rather than pool: in the spectral channels position is spatial frequency, which matters.
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * 16, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 6),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict scaled corrections and log scales."""
        spectra = [log_spectra(x[:, 0:2]), log_spectra(x[:, 2:4])]
        out: torch.Tensor = self.head(self.encoder(torch.cat([x, *spectra], dim=1)))
        return out


def log_spectra(x: torch.Tensor) -> torch.Tensor:
    """Spectral channels of a pair: both centred log power spectra (jointly standardised) and their difference.

    For Gaussian probes the log ratio of the two spectra no longer depends on the specimen: it is the
    quadratic form ``C·[Δz·(u²+v²) + A_x/2·(u²−v²) + A_y·u·v]`` (from ``σ₊² − σ₋²`` along the line-focus axes),
    linear in defocus and in both astigmatism components. Given these channels the network reads defocus and
    astigmatism directly instead of learning a Fourier transform from scarce CPU training.
    """
    window = torch.hann_window(x.shape[-1], dtype=x.dtype)
    win2d = window[:, None] * window[None, :]
    power = torch.fft.fftshift(torch.fft.fft2(x * win2d).abs().square(), dim=(-2, -1))
    logp = torch.log(power + 1e-2)
    ratio = (logp[:, :1] - logp[:, 1:2]).clamp(-6.0, 6.0)
    mean = logp.mean(dim=(1, 2, 3), keepdim=True)
    std = logp.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return torch.cat([(logp - mean) / std, ratio], dim=1)


def laplace_nll(out: torch.Tensor, target_scaled: torch.Tensor) -> torch.Tensor:
    """Mean Laplace negative log-likelihood of ``target_scaled`` under the predicted location and scale."""
    mu, log_b = out[:, :3], out[:, 3:].clamp(-6.0, 4.0)
    return ((target_scaled - mu).abs() * torch.exp(-log_b) + log_b).mean()


def save_weights(model: FocusNet, path: Path, meta: dict[str, Any]) -> None:
    """Write the state dict and metadata (architecture, training spec) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}
    torch.save({"architecture": ARCHITECTURE, "meta": meta, "state_dict": state}, path)


def load_weights(path: Path) -> tuple[FocusNet, dict[str, Any]]:
    """Load a weights file written by :func:`save_weights` (no network access, no pickle of code)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("architecture") != ARCHITECTURE:
        found = blob.get("architecture") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: not a {ARCHITECTURE} weights file (found {found!r})")
    meta = dict(blob["meta"])
    model = FocusNet(width=int(meta.get("width", 16)))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, meta
