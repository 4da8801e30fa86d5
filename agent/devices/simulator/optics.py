"""Image formation for the SEM simulator: a procedural specimen, a defocus/astigmatism PSF and shot noise.

The physics follows ``sem-reference.md`` §10:

* **Specimen** (:class:`Specimen`): a deterministic function of stage coordinates (metres) built from value-noise
  octaves whose texel sizes double from 1 nm to ~8 mm, each octave on its own randomly rotated lattice (so the
  texture is statistically isotropic and never lines up with the scan axes), plus sparse "particles" (disks,
  rings, rimmed pits) at six size scales from 0.3 µm to 300 µm that act as landmarks. Any field of view from
  ~1 µm to ~1 mm therefore shows texture at the pixel scale and structure at the frame scale.
* **Rendering is band-limited**: an octave is evaluated only if its texel is at least one pixel (finer detail
  would be averaged away by the pixel anyway), and each octave is sampled on the coarsest grid that still has two
  samples per texel, then bilinearly upsampled. That keeps a 256 × 256 render to a few milliseconds.
* **PSF** (:func:`psf_sigmas`): an anisotropic Gaussian. Astigmatism vector ``A = S·R(θ₀)·stig`` (µm), line foci
  at ``Δz ± |A|/2`` along ``φ = ½·atan2(A_y, A_x)``, ``σ₁,₂ = sqrt(σ₀² + (k·α·Δz₁,₂)²)``; applied as an OTF by FFT.
* **Noise** (:func:`render_image`): primary electrons ``N = I·t/e`` per pixel, detected signal ``η·N·c``; Gaussian
  shot noise at slow scans, Gamma-distributed (heavier) noise below 0.5 µs dwell, plus Gaussian read noise.

Pixel geometry (the convention the simulator's stage and ``agent.roi`` rely on): pixel (row ``i``, column ``j``)
of an ``H × W`` image images the specimen point ``center + R(scan_rotation)·(u, v)`` with
``u = (j − (W−1)/2)·p``, ``v = (i − (H−1)/2)·p`` and ``p = fov / W`` (``fov`` is the horizontal field width):
at zero scan rotation, columns run along +x and rows along +y of the specimen frame.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_OPTICS",
    "OpticsParams",
    "Specimen",
    "psf_sigmas",
    "render_image",
    "render_specimen",
]

_ELEMENTARY_CHARGE_C = 1.602176634e-19

# Value-noise lattices: a few shared random tables, each octave reads one with its own rotation and offset.
_TABLE_SIZE = 512
_TABLE_MASK = _TABLE_SIZE - 1
_N_TABLES = 4
# Octave texel sizes: 1 nm · 2^k for k = 0..23 (up to ~8.4 mm).
_OCTAVE_BASE_M = 1e-9
_N_OCTAVES = 24
# Landmark particles: nominal radius 0.3 µm · 4^j, one candidate per cell of side 6 radii, half of them present.
_PARTICLE_BASE_M = 0.3e-6
_N_PARTICLE_SCALES = 6
_PARTICLE_CELL_FACTOR = 6.0
_PARTICLE_AMPLITUDE = 2.2
# Detector setting: grey level = 0.5 + contrast · (signal − mean) / std over the field (auto brightness/contrast).
_DETECTOR_CONTRAST = 0.16
_CACHE_SIZE = 6


@dataclass(frozen=True)
class OpticsParams:
    """Column and detector constants of the simulated SEM (realistic magnitudes, sem-reference §9–10).

    Attributes:
        convergence_semi_angle_rad: probe convergence semi-angle α (MAPFoSt default 3 mrad).
        probe_sigma_m: in-focus probe radius σ₀ (Gaussian s.d.), a few nm for a field-emission SEM.
        blur_factor: k in σ = k·α·Δz; 0.5 is the per-axis s.d. of a uniform disk of radius α·Δz.
        astig_um_per_unit: line-focus separation |A| (µm) per stigmator unit (MAPFoSt's ``astig_scaling``).
        astig_rotation_rad: rotation θ₀ between the stigmator axes and the scan axes.
        beam_current_a: probe current (sets the number of primary electrons per pixel).
        detection_efficiency: η, secondary-electron yield times detector efficiency.
        read_noise_counts: s.d. of additive Gaussian detector noise, in detected-electron units.
        fast_scan_dwell_s: below this dwell the noise is Gamma-distributed (sem-reference §10.2).
        fast_scan_excess: variance multiplier of the Gamma noise at fast scans.
    """

    convergence_semi_angle_rad: float = 3e-3
    probe_sigma_m: float = 2e-9
    blur_factor: float = 0.5
    astig_um_per_unit: float = 10.0
    astig_rotation_rad: float = 0.0
    beam_current_a: float = 100e-12
    detection_efficiency: float = 0.3
    read_noise_counts: float = 2.0
    fast_scan_dwell_s: float = 0.5e-6
    fast_scan_excess: float = 1.5


#: The constants :func:`render_image` uses unless told otherwise.
DEFAULT_OPTICS = OpticsParams()


def psf_sigmas(
    defocus_m: float, stig: tuple[float, float], optics: OpticsParams = DEFAULT_OPTICS
) -> tuple[float, float, float]:
    """Return ``(sigma_1_m, sigma_2_m, angle_rad)`` of the anisotropic Gaussian probe.

    ``sigma_1`` lies along ``angle_rad`` (in the scan frame), ``sigma_2`` across it. ``defocus_m`` is the set
    working distance minus the in-focus working distance; ``stig`` is the stigmator error in stigmator units.
    """
    c, s = math.cos(optics.astig_rotation_rad), math.sin(optics.astig_rotation_rad)
    ax_um = optics.astig_um_per_unit * (c * stig[0] - s * stig[1])
    ay_um = optics.astig_um_per_unit * (s * stig[0] + c * stig[1])
    half_um = 0.5 * math.hypot(ax_um, ay_um)
    angle = 0.5 * math.atan2(ay_um, ax_um)
    blur_per_m = optics.blur_factor * optics.convergence_semi_angle_rad
    dz1 = defocus_m + half_um * 1e-6
    dz2 = defocus_m - half_um * 1e-6
    s1 = math.sqrt(optics.probe_sigma_m**2 + (blur_per_m * dz1) ** 2)
    s2 = math.sqrt(optics.probe_sigma_m**2 + (blur_per_m * dz2) ** 2)
    return s1, s2, angle


def _splitmix(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """A 64-bit integer hash (SplitMix64 finaliser); arrays wrap silently on overflow, as intended."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _unit_floats(values: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Map hashed integers to floats in [0, 1)."""
    return (values >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class _Octave:
    texel_m: float
    table: int
    cos: float
    sin: float
    offset_x: float
    offset_y: float


class Specimen:
    """A procedural, deterministic specimen defined over stage coordinates in metres.

    The same ``seed`` always gives the same specimen. Rasters of recent views are cached (a focus pair or a
    focus sweep renders the same view several times with different blur).
    """

    def __init__(self, seed: int) -> None:
        """Build the random tables of the specimen from ``seed``."""
        self.seed = int(seed)
        rng = np.random.default_rng(np.random.SeedSequence([0x5E5, self.seed]))
        self._tables = rng.uniform(-1.0, 1.0, size=(_N_TABLES, _TABLE_SIZE * _TABLE_SIZE)).astype(np.float32)
        octaves = []
        for k in range(_N_OCTAVES):
            angle = rng.uniform(0.0, 2.0 * math.pi)
            octaves.append(
                _Octave(
                    texel_m=_OCTAVE_BASE_M * 2.0**k,
                    table=k % _N_TABLES,
                    cos=math.cos(angle),
                    sin=math.sin(angle),
                    offset_x=float(rng.uniform(0, _TABLE_SIZE)),
                    offset_y=float(rng.uniform(0, _TABLE_SIZE)),
                )
            )
        self._octaves = tuple(octaves)
        self._particle_salt = int(rng.integers(0, 2**62))
        self._cache: OrderedDict[tuple[float, float, float, float, int, int], tuple[int, NDArray[np.float32]]]
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Specimen(seed={self.seed})"

    # -- rasterisation -------------------------------------------------------------------------------------------

    def raster(
        self,
        *,
        center_m: tuple[float, float],
        fov_m: float,
        scan_rotation_rad: float,
        shape: tuple[int, int],
        pad: int = 0,
    ) -> NDArray[np.float32]:
        """Return the detector grey levels (no blur, no noise) of a view, with ``pad`` extra pixels per side.

        Grey levels are normalised over the unpadded field (the detector's brightness/contrast setting for that
        field), so the padding does not change the values inside the field.
        """
        h, w = shape
        if h < 1 or w < 1 or fov_m <= 0 or not math.isfinite(fov_m) or pad < 0:
            raise ValueError(f"invalid view: shape={shape}, fov_m={fov_m}, pad={pad}")
        key = (float(center_m[0]), float(center_m[1]), float(fov_m), float(scan_rotation_rad), h, w)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] >= pad:
                self._cache.move_to_end(key)
                cut = hit[0] - pad
                return hit[1][cut : hit[1].shape[0] - cut, cut : hit[1].shape[1] - cut]
        grey = self._render_raster(center_m, fov_m, scan_rotation_rad, h, w, pad)
        with self._lock:
            self._cache[key] = (pad, grey)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return grey

    def _render_raster(
        self, center_m: tuple[float, float], fov_m: float, rot: float, h: int, w: int, pad: int
    ) -> NDArray[np.float32]:
        pixel_m = fov_m / w
        hp, wp = h + 2 * pad, w + 2 * pad
        total = np.zeros((hp, wp), dtype=np.float32)
        by_level: dict[int, list[_Octave]] = {}
        for octave in self._octaves:
            texel_px = octave.texel_m / pixel_m
            if texel_px < 1.0:
                continue  # finer than a pixel: averaged away by the scan
            if texel_px > 32.0 * max(hp, wp):
                continue  # a near-constant offset over the frame, removed by the detector normalisation anyway
            # Two samples per texel at least, and never coarser than a few samples across the padded frame.
            level = max(0, math.floor(math.log2(texel_px / 2.0)))
            level = min(level, max(0, int(math.log2(max(hp, wp) / 4.0))))
            by_level.setdefault(level, []).append(octave)
        for level, octaves in sorted(by_level.items()):
            u, v = _level_axes(hp, wp, level, pixel_m, pad, h, w)
            acc = np.zeros((v.size, u.size), dtype=np.float32)
            for octave in octaves:
                acc += self._octave_values(octave, center_m, rot, u, v)
            total += _upsample(acc, hp, wp, level)
        self._add_particles(total, center_m, rot, pixel_m, pad, h, w)
        inner = total[pad : pad + h, pad : pad + w]
        mean = float(inner.mean())
        std = float(inner.std()) or 1.0
        grey = 0.5 + (_DETECTOR_CONTRAST / std) * (total - mean)
        np.clip(grey, 0.01, 0.99, out=grey)
        return grey.astype(np.float32, copy=False)

    def _octave_values(
        self,
        octave: _Octave,
        center_m: tuple[float, float],
        rot: float,
        u: NDArray[np.float32],
        v: NDArray[np.float32],
    ) -> NDArray[np.float32]:
        """Evaluate one value-noise octave on the grid ``center + R(rot)·(u, v)`` (u, v in metres)."""
        inv = 1.0 / octave.texel_m
        # Lattice coordinates of the centre in float64, split so the per-pixel part stays small (float32-safe).
        qcx = (octave.cos * center_m[0] - octave.sin * center_m[1]) * inv + octave.offset_x
        qcy = (octave.sin * center_m[0] + octave.cos * center_m[1]) * inv + octave.offset_y
        icx, icy = math.floor(qcx), math.floor(qcy)
        fcx, fcy = qcx - icx, qcy - icy
        cr = math.cos(rot + math.atan2(octave.sin, octave.cos))
        sr = math.sin(rot + math.atan2(octave.sin, octave.cos))
        uu = (u * inv).astype(np.float32)
        vv = (v * inv).astype(np.float32)
        qx = (np.float32(fcx) + np.float32(cr) * uu)[None, :] - (np.float32(sr) * vv)[:, None]
        qy = (np.float32(fcy) + np.float32(sr) * uu)[None, :] + (np.float32(cr) * vv)[:, None]
        fx_floor = np.floor(qx)
        fy_floor = np.floor(qy)
        tx = qx - fx_floor
        ty = qy - fy_floor
        ix = (fx_floor.astype(np.int32) + np.int32(icx & _TABLE_MASK)) & np.int32(_TABLE_MASK)
        iy = (fy_floor.astype(np.int32) + np.int32(icy & _TABLE_MASK)) & np.int32(_TABLE_MASK)
        ix1 = (ix + np.int32(1)) & np.int32(_TABLE_MASK)
        row0 = iy * np.int32(_TABLE_SIZE)
        row1 = ((iy + np.int32(1)) & np.int32(_TABLE_MASK)) * np.int32(_TABLE_SIZE)
        table = self._tables[octave.table]
        v00 = table[row0 + ix]
        v10 = table[row0 + ix1]
        v01 = table[row1 + ix]
        v11 = table[row1 + ix1]
        sx = tx * tx * (3.0 - 2.0 * tx)
        sy = ty * ty * (3.0 - 2.0 * ty)
        top = v00 + sx * (v10 - v00)
        bottom = v01 + sx * (v11 - v01)
        values: NDArray[np.float32] = (top + sy * (bottom - top)).astype(np.float32, copy=False)
        return values

    def _add_particles(
        self,
        total: NDArray[np.float32],
        center_m: tuple[float, float],
        rot: float,
        pixel_m: float,
        pad: int,
        h: int,
        w: int,
    ) -> None:
        """Add the landmark particles whose radius spans at least 1.5 pixels."""
        hp, wp = total.shape
        frame_m = max(hp, wp) * pixel_m
        for j in range(_N_PARTICLE_SCALES):
            radius_m = _PARTICLE_BASE_M * 4.0**j
            radius_px = radius_m / pixel_m
            cell_m = _PARTICLE_CELL_FACTOR * radius_m
            if radius_px < 1.5 or cell_m > 64.0 * frame_m:
                continue
            # Sample finely enough for a crisp edge: at least six samples per radius.
            level = max(0, math.floor(math.log2(max(radius_px / 6.0, 1.0))))
            u, v = _level_axes(hp, wp, level, pixel_m, pad, h, w)
            layer = self._particle_layer(j, radius_m, cell_m, center_m, rot, u, v, pixel_m * 2.0**level)
            if layer is not None:
                total += _upsample(layer, hp, wp, level)

    def _particle_layer(
        self,
        scale: int,
        radius_m: float,
        cell_m: float,
        center_m: tuple[float, float],
        rot: float,
        u: NDArray[np.float32],
        v: NDArray[np.float32],
        edge_m: float,
    ) -> NDArray[np.float32] | None:
        # Cell coordinates relative to the cell that holds the centre (float64 split, float32 per pixel).
        ccx, ccy = center_m[0] / cell_m, center_m[1] / cell_m
        icx, icy = math.floor(ccx), math.floor(ccy)
        cr, sr = math.cos(rot), math.sin(rot)
        uu = (u / cell_m).astype(np.float32)
        vv = (v / cell_m).astype(np.float32)
        px = (np.float32(ccx - icx) + np.float32(cr) * uu)[None, :] - (np.float32(sr) * vv)[:, None]
        py = (np.float32(ccy - icy) + np.float32(sr) * uu)[None, :] + (np.float32(cr) * vv)[:, None]
        cx_floor = np.floor(px)
        cy_floor = np.floor(py)
        kx = cx_floor.astype(np.int64)
        ky = cy_floor.astype(np.int64)
        kx0, ky0 = int(kx.min()), int(ky.min())
        nx, ny = int(kx.max()) - kx0 + 1, int(ky.max()) - ky0 + 1
        # Per-cell particle parameters from a hash of the absolute cell index.
        gx, gy = np.meshgrid(
            np.arange(kx0, kx0 + nx, dtype=np.int64) + icx, np.arange(ky0, ky0 + ny, dtype=np.int64) + icy
        )
        salt = np.uint64((self._particle_salt + 7919 * scale) % 2**63)
        base = _splitmix(
            gx.astype(np.uint64) * np.uint64(0x9E3779B1) ^ gy.astype(np.uint64) * np.uint64(0x85EBCA77) ^ salt
        )
        r = [_unit_floats(_splitmix(base + np.uint64(i))) for i in range(5)]
        present = r[0] < 0.5
        if not present.any():
            return None
        inner = 1.6 / _PARTICLE_CELL_FACTOR  # keep the particle inside its cell: no neighbour look-ups needed
        pcx = (inner + (1.0 - 2.0 * inner) * r[1]).astype(np.float32)
        pcy = (inner + (1.0 - 2.0 * inner) * r[2]).astype(np.float32)
        prad = ((0.6 + 0.8 * r[3]) * radius_m / cell_m).astype(np.float32)
        kind = np.where(present, 1 + (r[4] * 3.0).astype(np.int64), 0)
        flat = (ky - ky0) * nx + (kx - kx0)
        dx = (px - cx_floor) - pcx.ravel()[flat]
        dy = (py - cy_floor) - pcy.ravel()[flat]
        dist = np.sqrt(dx * dx + dy * dy)
        rad = prad.ravel()[flat]
        kinds = kind.ravel()[flat]
        edge = np.float32(edge_m / cell_m)
        disk = np.clip((rad - dist) / edge + 0.5, 0.0, 1.0)
        core = np.clip((0.7 * rad - dist) / edge + 0.5, 0.0, 1.0)
        amp = np.float32(_PARTICLE_AMPLITUDE)
        out = np.where(kinds == 1, amp * disk, 0.0)  # bright particle
        out = np.where(kinds == 2, amp * (disk - core), out)  # ring
        out = np.where(kinds == 3, amp * (disk - 2.0 * core), out)  # pit with a bright rim
        return out.astype(np.float32, copy=False)


def _level_axes(
    hp: int, wp: int, level: int, pixel_m: float, pad: int, h: int, w: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Sample positions (metres from the field centre) of the level-``level`` grid along x (u) and y (v)."""
    step = 2**level
    nu = (wp - 1) // step + 2 if level else wp
    nv = (hp - 1) // step + 2 if level else hp
    u = ((np.arange(nu, dtype=np.float64) * step - pad - (w - 1) / 2.0) * pixel_m).astype(np.float32)
    v = ((np.arange(nv, dtype=np.float64) * step - pad - (h - 1) / 2.0) * pixel_m).astype(np.float32)
    return u, v


def _interp_index(n_out: int, n_in: int, step: int) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Source indices and weights of linear interpolation from spacing ``step`` to unit spacing."""
    t = np.arange(n_out, dtype=np.float64) / step
    i0 = np.minimum(np.floor(t).astype(np.intp), n_in - 2)
    return i0, (t - i0).astype(np.float32)


def _upsample(grid: NDArray[np.float32], hp: int, wp: int, level: int) -> NDArray[np.float32]:
    """Separable linear upsampling of a level grid to the full-resolution ``(hp, wp)`` grid."""
    if level == 0:
        return grid
    step = 2**level
    # Gathers and lerps rather than interpolation matrices: BLAS is slow and thread-hungry for these shapes.
    iy, fy = _interp_index(hp, grid.shape[0], step)
    rows = grid[iy] + fy[:, None] * (grid[iy + 1] - grid[iy])
    ix, fx = _interp_index(wp, grid.shape[1], step)
    return rows[:, ix] + fx[None, :] * (rows[:, ix + 1] - rows[:, ix])


_FREQ_CACHE: dict[tuple[int, int], tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]] = {}


def _freq_terms(hp: int, wp: int) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """``u², u·v, v²`` on the rfft2 grid (cycles per pixel); cached per shape."""
    hit = _FREQ_CACHE.get((hp, wp))
    if hit is None:
        fy = np.fft.fftfreq(hp).astype(np.float32)[:, None]
        fx = np.fft.rfftfreq(wp).astype(np.float32)[None, :]
        hit = (fx * fx + 0 * fy, fx * fy, fy * fy + 0 * fx)
        if len(_FREQ_CACHE) > 32:
            _FREQ_CACHE.clear()
        _FREQ_CACHE[(hp, wp)] = hit
    return hit


def _blur(image: NDArray[np.float32], s1_px: float, s2_px: float, angle: float) -> NDArray[np.float32]:
    """Convolve with the rotated anisotropic Gaussian (σ₁ along ``angle``) through its OTF."""
    uu, uv, vv = _freq_terms(*image.shape)
    c, s = math.cos(angle), math.sin(angle)
    # exp(−2π²(σ₁² u'² + σ₂² v'²)) with u' = u·c + v·s, v' = −u·s + v·c, expanded as a quadratic form.
    a = s1_px**2 * c * c + s2_px**2 * s * s
    b = 2.0 * (s1_px**2 - s2_px**2) * c * s
    d = s1_px**2 * s * s + s2_px**2 * c * c
    k = -2.0 * math.pi**2
    otf = np.exp(np.float32(k * a) * uu + np.float32(k * b) * uv + np.float32(k * d) * vv)
    spectrum = np.fft.rfft2(image)
    spectrum *= otf
    return np.fft.irfft2(spectrum, s=image.shape).astype(np.float32, copy=False)


def render_specimen(
    specimen: Specimen,
    *,
    center_m: tuple[float, float],
    fov_m: float,
    scan_rotation_rad: float,
    shape: tuple[int, int],
    defocus_m: float,
    stig: tuple[float, float],
    optics: OpticsParams = DEFAULT_OPTICS,
) -> NDArray[np.float32]:
    """Return the noise-free, blurred grey image (float32, values in [0, 1]) of a view."""
    h, w = shape
    if h < 1 or w < 1 or not (fov_m > 0 and math.isfinite(fov_m)):
        raise ValueError(f"invalid view: shape={shape}, fov_m={fov_m}")
    pixel_m = fov_m / w
    s1, s2, angle = psf_sigmas(defocus_m, stig, optics)
    s1_px, s2_px = s1 / pixel_m, s2 / pixel_m
    # Pad by three PSF widths (bucketed so that a focus pair shares one cached raster), at most half a frame.
    need = 3.0 * max(s1_px, s2_px) + 2.0
    pad = 8
    while pad < need and pad < max(h, w) // 2:
        pad *= 2
    grey = specimen.raster(
        center_m=center_m, fov_m=fov_m, scan_rotation_rad=scan_rotation_rad, shape=shape, pad=pad
    )
    blurred = _blur(grey, s1_px, s2_px, angle)
    return blurred[pad : pad + h, pad : pad + w]


def render_image(
    specimen: Specimen,
    *,
    center_m: tuple[float, float],
    fov_m: float,
    scan_rotation_rad: float,
    shape: tuple[int, int],
    defocus_m: float,
    stig: tuple[float, float],
    dwell_s: float,
    rng: np.random.Generator,
    optics: OpticsParams = DEFAULT_OPTICS,
) -> NDArray[np.float32]:
    """Render one SEM frame: specimen → defocus/astigmatism PSF → shot noise. Returns float32 (H, W) in [0, 1].

    Args:
        specimen: the specimen.
        center_m: specimen point (metres) imaged at the frame centre.
        fov_m: horizontal field width (metres); the pixel size is ``fov_m / W``.
        scan_rotation_rad: scan rotation (see the module docstring for the pixel geometry).
        shape: ``(H, W)`` in pixels.
        defocus_m: set working distance minus the in-focus working distance (metres).
        stig: ``(stigm_x − ideal_x, stigm_y − ideal_y)`` in stigmator units.
        dwell_s: pixel dwell time (seconds); sets the shot-noise level.
        rng: noise source (the caller seeds it for reproducibility).
        optics: column and detector constants.
    """
    if dwell_s <= 0 or not math.isfinite(dwell_s):
        raise ValueError(f"dwell_s must be positive, got {dwell_s}")
    if not (math.isfinite(defocus_m) and math.isfinite(stig[0]) and math.isfinite(stig[1])):
        raise ValueError(f"non-finite focus state: defocus_m={defocus_m}, stig={stig}")
    clean = render_specimen(
        specimen,
        center_m=center_m,
        fov_m=fov_m,
        scan_rotation_rad=scan_rotation_rad,
        shape=shape,
        defocus_m=defocus_m,
        stig=stig,
        optics=optics,
    )
    scale = optics.detection_efficiency * optics.beam_current_a * dwell_s / _ELEMENTARY_CHARGE_C
    lam = np.maximum(clean, 0.0) * np.float32(scale)
    if dwell_s < optics.fast_scan_dwell_s:
        # Fast scans: skewed, heavier-than-Poisson noise (Gamma with the same mean, variance × excess).
        excess = optics.fast_scan_excess
        counts = rng.gamma(np.maximum(lam / excess, 1e-6), excess).astype(np.float32)
    else:
        # Shot noise and read noise are both Gaussian here: one draw with the summed variance.
        var = lam + np.float32(optics.read_noise_counts**2)
        counts = lam + np.sqrt(var) * rng.standard_normal(lam.shape, dtype=np.float32)
    if dwell_s < optics.fast_scan_dwell_s and optics.read_noise_counts > 0:
        counts += np.float32(optics.read_noise_counts) * rng.standard_normal(lam.shape, dtype=np.float32)
    image: NDArray[np.float32] = np.clip(counts / np.float32(scale), 0.0, 1.0).astype(np.float32, copy=False)
    return image
