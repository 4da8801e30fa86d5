"""Training data generator and patch handling."""

from __future__ import annotations

import numpy as np
import pytest

from agent.autofocus.dataset import TrainingSpec, generate_samples
from agent.autofocus.patches import coarse_pair, normalize_pairs, patch_grid, stack_inputs, stack_patch_pairs


def test_generate_samples_shapes_targets_and_determinism() -> None:
    spec = TrainingSpec(n_specimens=2)
    x, y = generate_samples(3, np.random.default_rng(1), spec)
    assert x.shape == (12, 4, 64, 64)
    assert x.dtype == np.float32
    assert y.shape == (12, 3)
    assert y.dtype == np.float32
    # Each pair (fine: channels 0-1, coarse: 2-3) is standardised jointly; the coarse pair is shared per view.
    for pair in (x[:, 0:2], x[:, 2:4]):
        assert np.allclose(pair.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
        assert np.allclose(pair.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    assert np.array_equal(x[0, 2:], x[3, 2:])
    assert not np.array_equal(x[0, :2], x[1, :2])
    # Four patch pairs per view share the view's target; targets stay within the sampled ranges.
    assert np.array_equal(y[0], y[3])
    assert not np.array_equal(y[0], y[4])
    assert np.all(np.abs(y[:, 0]) <= spec.wd_range_um)
    assert np.all(np.abs(y[:, 1:]) <= spec.stig_range)
    x2, y2 = generate_samples(3, np.random.default_rng(1), spec)
    assert np.array_equal(x, x2)
    assert np.array_equal(y, y2)


def test_pair_channels_differ_by_the_perturbation() -> None:
    # Far from focus on the + side, the WD+sigma image (channel 1) is the blurrier one.
    spec = TrainingSpec(n_specimens=1, near_fraction=0.0, stig_range=0.01)
    x, y = generate_samples(8, np.random.default_rng(3), spec)
    defocus = -y[:, 0]
    # The coarse pair (whole field, 4x4 block means) shows detail at the scale of the blur without shot noise.
    coarse = x[::4, 2:4]
    hf = np.mean(np.diff(coarse, axis=3) ** 2, axis=(2, 3))
    defocus = defocus[::4]
    far_plus = defocus > 20
    far_minus = defocus < -20
    assert np.all(hf[far_plus, 1] < hf[far_plus, 0])
    assert np.all(hf[far_minus, 1] > hf[far_minus, 0])


def test_generate_samples_rejects_empty() -> None:
    with pytest.raises(ValueError):
        generate_samples(0, np.random.default_rng(0))


def test_patch_grid_covers_the_image() -> None:
    corners = patch_grid((256, 256), 64, 9)
    assert len(corners) == 9
    assert (0, 0) in corners
    assert (192, 192) in corners
    assert patch_grid((64, 64), 64, 4) == [(0, 0)] * 4 or len(set(patch_grid((64, 64), 64, 4))) == 1
    with pytest.raises(ValueError):
        patch_grid((32, 256), 64, 4)


def test_stack_patch_pairs_checks_shapes_and_normalises() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((128, 128), dtype=np.float32)
    b = rng.random((128, 128), dtype=np.float32) * 0.5
    pairs = stack_patch_pairs(a, b, patch_grid(a.shape, 64, 4), 64)
    assert pairs.shape == (4, 2, 64, 64)
    # Joint normalisation keeps the contrast ratio between the two images.
    assert pairs[:, 1].std() < pairs[:, 0].std()
    with pytest.raises(ValueError):
        stack_patch_pairs(a, b[:64], [(0, 0)], 64)
    assert normalize_pairs(np.zeros((1, 2, 4, 4), np.float32)).max() == 0.0


def test_coarse_pair_and_inputs() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((256, 256), dtype=np.float32)
    b = rng.random((256, 256), dtype=np.float32)
    coarse = coarse_pair(a, b, 64)
    assert coarse.shape == (2, 64, 64)
    assert np.isclose(coarse.std(), 1.0, atol=1e-3)
    inputs = stack_inputs(a, b, patch_grid(a.shape, 64, 5), 64)
    assert inputs.shape == (5, 4, 64, 64)
    with pytest.raises(ValueError):
        coarse_pair(a[:, :200], b[:, :200], 64)
