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
ARCHITECTURE = "focusnet-v2"
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
    """``(N, 2, P, P)`` normalised patch pairs -> ``(N, 6)``: three scaled corrections and three log scales."""

    def __init__(self, width: int = 16) -> None:
        """Build the layers; ``width`` is the channel count of the first block."""
        super().__init__()
        # A strided 5x5 first layer still sees every pixel (blur lives at the finest scale) but quarters the
        # cost of everything after it: this keeps CPU training to minutes.
        self.encoder = nn.Sequential(
            *_conv(4, width, 5, stride=2),
            _block(width, 2 * width, 3, 2),
            _block(2 * width, 3 * width, 3, 2),
            _block(3 * width, 4 * width, 3, 2),
        )
        # Global pooling of both the mean and the spread of the features: blur is a texture statistic.
        self.head = nn.Sequential(
            nn.Linear(8 * width, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 6),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict scaled corrections and log scales."""
        f = self.encoder(torch.cat([x, log_spectra(x)], dim=1))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out


def log_spectra(x: torch.Tensor) -> torch.Tensor:
    """Centred log power spectra of each channel, standardised per channel.

    Defocus shrinks the spectrum and astigmatism makes it elliptical (sem-reference §7): given the spectra as
    extra channels, the network reads blur size and orientation directly instead of learning a Fourier
    transform from scarce CPU training.
    """
    window = torch.hann_window(x.shape[-1], dtype=x.dtype)
    win2d = window[:, None] * window[None, :]
    power = torch.fft.fftshift(torch.fft.fft2(x * win2d).abs().square(), dim=(-2, -1))
    logp = torch.log(power + 1e-3)
    mean = logp.mean(dim=(-2, -1), keepdim=True)
    std = logp.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3)
    return (logp - mean) / std


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
