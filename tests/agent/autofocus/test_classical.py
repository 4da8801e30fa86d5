"""The classical baseline: sharpness, parabola fit, and a run on the optical bench."""

from __future__ import annotations

import numpy as np
import pytest

from agent.autofocus import AutofocusConfig, parabola_vertex, run_autofocus, sharpness
from agent.autofocus.bench import OpticalBench


def test_parabola_vertex_finds_the_peak() -> None:
    xs = np.linspace(-10, 10, 9)
    scores = np.exp(-((xs - 1.7) ** 2) / 20.0)
    assert parabola_vertex(xs, scores) == pytest.approx(1.7, abs=1e-6)
    # Peak at the edge (not concave around the best sample): the best sample.
    assert parabola_vertex(xs, np.exp(xs)) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        parabola_vertex(xs[:2], scores[:2])


def test_sharpness_falls_with_defocus() -> None:
    bench = OpticalBench(seed=1, wd_mm=5.0, true_wd_mm=5.0)
    values = []
    for err_um in (0.0, 10.0, 30.0):
        bench.wd_mm = 5.0 + err_um * 1e-3
        values.append(sharpness(bench.acquire_image(fov_um=1.28, shape=(128, 128), dwell_s=2e-6)))
    assert values[0] > values[1] > values[2]


def test_classical_run_reduces_the_focus_error() -> None:
    bench = OpticalBench(seed=2, true_wd_mm=5.0, wd_mm=5.025, ideal_stig=(0.3, -0.2), stig=(0.0, 0.0))
    cfg = AutofocusConfig(method="classical", max_iters=2, settle_s=0.0, image_size_px=128, dwell_us=2.0)
    result = run_autofocus(bench, cfg)
    assert result.method == "classical"
    assert abs(bench.wd_error_um) < 3.0
    assert max(abs(v) for v in bench.stig_error) < 0.3
    assert result.images == bench.images == sum(it.images for it in result.trace)
