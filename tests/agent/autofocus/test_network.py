"""The CNN: shapes, spectra, loss, weights round trip, and a tiny training smoke step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import import_optional

torch = import_optional("torch", "EM_AGENT_REQUIRE_TORCH")

from agent.autofocus.dataset import TrainingSpec  # noqa: E402
from agent.autofocus.network import (  # noqa: E402
    FocusNet,
    laplace_nll,
    load_weights,
    log_spectra,
    save_weights,
)
from agent.autofocus.train import augment, train  # noqa: E402


def test_model_shapes() -> None:
    model = FocusNet(width=8).eval()
    out = model(torch.randn(5, 4, 64, 64))
    assert out.shape == (5, 6)
    assert log_spectra(torch.randn(3, 2, 64, 64)).shape == (3, 3, 64, 64)


def test_laplace_nll_prefers_the_right_answer() -> None:
    target = torch.tensor([[1.0, 0.5, -0.5]])
    good = torch.tensor([[1.0, 0.5, -0.5, -2.0, -2.0, -2.0]])
    bad = torch.tensor([[-1.0, 0.0, 0.5, -2.0, -2.0, -2.0]])
    assert float(laplace_nll(good, target)) < float(laplace_nll(bad, target))


def test_weights_round_trip(tmp_path: Path) -> None:
    model = FocusNet(width=8).eval()
    path = tmp_path / "w.pt"
    save_weights(
        model, path, {"width": 8, "spec": TrainingSpec().as_dict(), "target_scale": [10.0, 0.5, 0.5]}
    )
    loaded, meta = load_weights(path)
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    assert meta["spec"]["patch_px"] == 64


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"architecture": "something-else", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a focusnet"):
        load_weights(path)


def test_augment_maps_stig_targets_with_the_image() -> None:
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    y = torch.tensor([[3.0, 0.5, 0.25], [-1.0, -0.5, 1.0]])
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        xa, ya = augment(x, y, gen)
        assert torch.equal(ya[:, 0], y[:, 0])
        sx, sy = float(ya[0, 1] / y[0, 1]), float(ya[0, 2] / y[0, 2])
        transposed = torch.equal(xa, x.transpose(2, 3)) or torch.equal(xa, x.transpose(2, 3).flip(3))
        assert (sx == -1.0) == transposed
        seen.add((sx, sy))
    assert seen == {(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)}


def test_training_smoke_step() -> None:
    model, meta = train(
        views=3,
        val_views=2,
        epochs=1,
        batch=8,
        lr=1e-3,
        seed=0,
        width=4,
        spec=TrainingSpec(n_specimens=1),
        log=False,
    )
    assert isinstance(model, FocusNet)
    assert set(meta["validation"]) >= {"mae_wd_um", "mae_stig"}  # type: ignore[arg-type]
