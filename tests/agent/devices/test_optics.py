"""Image formation of the SEM simulator: determinism, geometry, PSF physics and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.devices.simulator.optics import (
    DEFAULT_OPTICS,
    Specimen,
    psf_sigmas,
    render_image,
    render_specimen,
)


def _clean(specimen: Specimen, **kw: object) -> np.ndarray:
    args: dict[str, object] = {
        "center_m": (1.5e-3, -2.0e-3),
        "fov_m": 10e-6,
        "scan_rotation_rad": 0.0,
        "shape": (128, 128),
        "defocus_m": 0.0,
        "stig": (0.0, 0.0),
    }
    args.update(kw)
    return render_specimen(specimen, **args)  # type: ignore[arg-type]


def _band_energy(img: np.ndarray, axis: int) -> float:
    return float(np.mean(np.diff(img, axis=axis) ** 2))


def test_specimen_is_deterministic_and_seeded() -> None:
    a = _clean(Specimen(7))
    b = _clean(Specimen(7))
    c = _clean(Specimen(8))
    assert np.array_equal(a, b)
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] < 0.3


@pytest.mark.parametrize("fov_m", [1e-6, 10e-6, 100e-6, 1e-3])
def test_texture_at_every_field_of_view(fov_m: float) -> None:
    img = _clean(Specimen(3), fov_m=fov_m)
    assert img.dtype == np.float32
    assert img.min() >= 0.0
    assert img.max() <= 1.0
    # Structure at the pixel scale (what autofocus needs) and at the frame scale (what ROI matching needs).
    assert _band_energy(img, 1) > 1e-4
    assert img.std() > 0.1


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    # The detector normalises each field, so compare shapes (correlation), not grey levels.
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_pixel_geometry_columns_along_x_rows_along_y() -> None:
    sp = Specimen(4)
    pixel = 10e-6 / 128
    base = _clean(sp)
    right = _clean(sp, center_m=(1.5e-3 + 8 * pixel, -2.0e-3))
    down = _clean(sp, center_m=(1.5e-3, -2.0e-3 + 8 * pixel))
    assert _corr(right[:, :-8], base[:, 8:]) > 0.99
    assert _corr(down[:-8, :], base[8:, :]) > 0.99
    assert _corr(down[:, :-8], base[:, 8:]) < 0.9
    # Scan rotation by +90°: image columns now run along +y of the specimen.
    rotated = _clean(sp, scan_rotation_rad=math.pi / 2)
    rot_right = _clean(sp, scan_rotation_rad=math.pi / 2, center_m=(1.5e-3, -2.0e-3 + 8 * pixel))
    assert _corr(rot_right[:, :-8], rotated[:, 8:]) > 0.99


def test_psf_sigmas_follow_geometric_optics() -> None:
    s1, s2, _ = psf_sigmas(10e-6, (0.0, 0.0))
    expected = math.hypot(DEFAULT_OPTICS.probe_sigma_m, 0.5 * 3e-3 * 10e-6)
    assert s1 == pytest.approx(expected)
    assert s2 == pytest.approx(expected)
    # Astigmatism: line foci at defocus ± |A|/2 (A = 10 µm per unit).
    s1, s2, angle = psf_sigmas(0.0, (1.0, 0.0))
    assert s1 == pytest.approx(s2)
    assert angle == pytest.approx(0.0)
    s1, s2, _ = psf_sigmas(5e-6, (1.0, 0.0))
    assert s1 == pytest.approx(math.hypot(2e-9, 0.5 * 3e-3 * 10e-6))
    assert s2 == pytest.approx(2e-9)


def test_psf_angle_symmetries_used_by_training_augmentation() -> None:
    # Transposing an image maps stig (x, y) to (-x, y); mirroring maps it to (x, -y).
    for sx, sy in [(0.7, 0.2), (-0.3, 0.9), (1.0, -1.0)]:
        _, _, a = psf_sigmas(3e-6, (sx, sy))
        _, _, t = psf_sigmas(3e-6, (-sx, sy))
        _, _, m = psf_sigmas(3e-6, (sx, -sy))
        assert math.cos(2 * (t - (math.pi / 2 - a))) == pytest.approx(1.0)
        assert math.cos(2 * (m + a)) == pytest.approx(1.0)


def test_defocus_blurs_and_astigmatism_is_directional() -> None:
    sp = Specimen(5)
    sharp = _clean(sp)
    blurred = _clean(sp, defocus_m=30e-6)
    assert _band_energy(blurred, 1) < 0.5 * _band_energy(sharp, 1)
    # Defocus +5 µm with stig (+1, 0): one line focus at +10 µm along x, the other in focus along y.
    along_x = _clean(sp, defocus_m=5e-6, stig=(1.0, 0.0), fov_m=2.56e-6)
    along_y = _clean(sp, defocus_m=5e-6, stig=(-1.0, 0.0), fov_m=2.56e-6)
    ratio_x = _band_energy(along_x, 1) / _band_energy(along_x, 0)
    ratio_y = _band_energy(along_y, 1) / _band_energy(along_y, 0)
    assert ratio_x < 0.8 * ratio_y


def test_noise_falls_with_dwell() -> None:
    sp = Specimen(6)
    clean = _clean(sp)
    rng = np.random.default_rng(0)
    kw = {
        "center_m": (1.5e-3, -2.0e-3),
        "fov_m": 10e-6,
        "scan_rotation_rad": 0.0,
        "shape": (128, 128),
        "defocus_m": 0.0,
        "stig": (0.0, 0.0),
        "rng": rng,
    }
    fast = render_image(sp, dwell_s=0.1e-6, **kw)  # type: ignore[arg-type]
    slow = render_image(sp, dwell_s=10e-6, **kw)  # type: ignore[arg-type]
    assert fast.dtype == np.float32
    assert fast.shape == (128, 128)
    noise_fast = float(np.std(fast - clean))
    noise_slow = float(np.std(slow - clean))
    assert noise_slow < 0.25 * noise_fast
    again = render_image(sp, dwell_s=0.1e-6, **{**kw, "rng": np.random.default_rng(0)})  # type: ignore[arg-type]
    assert np.array_equal(again, fast)


@pytest.mark.parametrize(
    "kw",
    [{"dwell_s": 0.0}, {"dwell_s": -1.0}, {"defocus_m": math.nan}, {"fov_m": 0.0}, {"shape": (0, 10)}],
)
def test_invalid_inputs_raise(kw: dict[str, object]) -> None:
    args: dict[str, object] = {
        "center_m": (0.0, 0.0),
        "fov_m": 10e-6,
        "scan_rotation_rad": 0.0,
        "shape": (32, 32),
        "defocus_m": 0.0,
        "stig": (0.0, 0.0),
        "dwell_s": 1e-6,
        "rng": np.random.default_rng(0),
    }
    args.update(kw)
    with pytest.raises(ValueError):
        render_image(Specimen(0), **args)  # type: ignore[arg-type]
