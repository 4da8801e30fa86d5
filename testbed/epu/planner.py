"""Build a :class:`~testbed.epu.plan.SessionPlan` from ``(preset, seed, grids)``: ids, positions, timing.

One seeded random generator drives everything in a fixed order (atlases, then each grid's squares, holes,
foil-hole images and micrographs), so the same inputs always give the same plan.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import datetime, timedelta

from testbed.epu.plan import (
    ATLAS_PIXEL_M,
    FH_PIXEL_M,
    GS_PIXEL_M,
    HOLE_SIZE_M,
    HOLE_SPACING_M,
    LOCAL_TZ,
    MIC_PIXEL_M,
    PRESETS,
    READOUT_H,
    READOUT_W,
    SQUARE_PITCH_PX,
    TILE_ATLAS_H,
    TILE_ATLAS_W,
    TILE_PIXEL_M,
    AtlasPlan,
    FoilHolePlan,
    GridPlan,
    GridSquarePlan,
    ImagePlan,
    MicrographPlan,
    PresetSpec,
    ScreeningPlan,
    SessionPlan,
    Stage,
    TemplateArea,
    TilePlan,
    TilePosition,
)


class _Ids:
    """EPU-style integer ids: one increasing counter per visit, with small gaps as EPU leaves them."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next = 3_000_000 + rng.randrange(0, 5_000_000)

    def __call__(self, gap: int = 1) -> int:
        value = self._next
        self._next += gap + (self._rng.randrange(0, 3) if gap > 1 else 0)
        return value


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _micro(rng: random.Random) -> timedelta:
    """A sub-second offset so that timestamps look like real clock readings."""
    return timedelta(microseconds=rng.randrange(0, 1_000_000))


def plan_session(
    *,
    preset: str = "small",
    seed: int = 0,
    grids: int | None = None,
    storage_windows: str = "Z:\\epu-testbed",
    label: str = "testbed",
) -> SessionPlan:
    """Plan a visit deterministically from ``(preset, seed, grids)``.

    ``grids`` defaults to the preset's. ``storage_windows`` is the Windows storage folder written into the
    files
    (the generator passes ``Z:\\<output folder name>`` so that paths map back onto the output folder).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    n_grids = spec.default_grids if grids is None else grids
    if n_grids < 1:
        raise ValueError(f"grids must be at least 1, got {n_grids}")
    if n_grids > 12:
        raise ValueError(f"an autoloader cassette holds at most 12 grids, got {n_grids}")
    rng = random.Random(f"epu-testbed/{preset}/{seed}")
    ids = _Ids(rng)
    base = datetime(2024, 4, 5, 9, 38, 40, tzinfo=LOCAL_TZ) + timedelta(
        days=seed % 365, seconds=rng.randrange(3600)
    )
    storage = storage_windows.rstrip("\\")

    screening_name = f"Supervisor_{base.strftime('%Y%m%d_%H%M%S')}_{label}_atlas"
    screening = ScreeningPlan(
        screening_id=ids(),
        samples_id=ids(),
        atlas_session_id=ids(),
        root_atlas_id=ids(),
        name=screening_name,
        started=base + _micro(rng),
        storage_folder_windows=f"{storage}\\atlas",
    )
    slots = sorted(rng.sample(range(12), n_grids))

    # Atlases are acquired first, one per grid, each tile about 8 s apart.
    t = 30.0
    atlases: list[AtlasPlan] = []
    for g, slot in enumerate(slots):
        atlas, t = _plan_atlas(rng, ids, spec, screening, base, slot, g, t)
        atlases.append(atlas)

    grid_plans: list[GridPlan] = []
    t += 120.0
    for g, atlas in enumerate(atlases):
        grid, t = _plan_grid(rng, ids, spec, base, storage, label, g, atlas, t)
        grid_plans.append(grid)
        t += 300.0
    return SessionPlan(
        preset=preset,
        seed=seed,
        spec=spec,
        storage_windows=storage,
        base_time=base,
        screening=screening,
        grids=grid_plans,
    )


def _image(
    rng: random.Random,
    stem: str,
    acquired: datetime,
    stage: Stage,
    *,
    pixel: float,
    mag: float,
    defocus: float,
    applied: float,
    exposure: float,
) -> ImagePlan:
    return ImagePlan(
        stem=stem,
        acquired=acquired,
        unique_id=_guid(rng),
        core_guid=_guid(rng),
        stage=stage,
        pixel_size_m=pixel,
        magnification=mag,
        defocus_m=defocus,
        applied_defocus_m=applied,
        exposure_time_s=exposure,
    )


def _plan_atlas(
    rng: random.Random,
    ids: _Ids,
    spec: PresetSpec,
    screening: ScreeningPlan,
    base: datetime,
    slot: int,
    g: int,
    t: float,
) -> tuple[AtlasPlan, float]:
    atlas_id = ids(4)
    sample_id = ids()
    cols = math.ceil(math.sqrt(spec.tiles))
    rows = math.ceil(spec.tiles / cols)
    width = cols * TILE_ATLAS_W
    height = rows * TILE_ATLAS_H
    started = base + timedelta(seconds=t) + _micro(rng)
    tiles: list[TilePlan] = []
    for n in range(spec.tiles):
        col, row = n % cols, n // cols
        x, y = col * TILE_ATLAS_W, row * TILE_ATLAS_H
        # Stage origin at the mosaic centre; stage Y grows downwards in atlas pixels here (sign is
        # immaterial).
        stage = Stage(
            x=(x + TILE_ATLAS_W / 2 - width / 2) * ATLAS_PIXEL_M,
            y=(y + TILE_ATLAS_H / 2 - height / 2) * ATLAS_PIXEL_M,
            z=6.997763392800003e-05,
            a=-0.00023079365424003018,
        )
        t += 8.0 + rng.random()
        acquired = base + timedelta(seconds=t) + _micro(rng)
        tile_id = ids(3)
        image = _image(
            rng,
            f"Tile_{tile_id}_{n}_{atlas_id}",
            acquired,
            stage,
            pixel=TILE_PIXEL_M,
            mag=210.0,
            defocus=-0.001,
            applied=-0.001,
            exposure=1.0,
        )
        tiles.append(TilePlan(tile_id, n, (x, y, TILE_ATLAS_W, TILE_ATLAS_H), stage, image, t + 0.5))
    t += 5.0
    atlas_image = _image(
        rng,
        f"Atlas_{atlas_id}",
        base + timedelta(seconds=t) + _micro(rng),
        Stage(0.0, 0.0, 0.0),
        pixel=ATLAS_PIXEL_M,
        mag=210.0,
        defocus=-0.001,
        applied=-0.001,
        exposure=1.0,
    )
    rel_dir = f"{screening.rel_dir}/Sample{slot}/Atlas"
    atlas = AtlasPlan(
        atlas_id=atlas_id,
        slot=slot,
        sample_id=sample_id,
        sample_name=f"grid{g + 1}",
        started=started,
        acquired=base + timedelta(seconds=t) + _micro(rng),
        storage_folder_windows=f"{screening.storage_folder_windows}\\{screening.name}\\Sample{slot}",
        rel_dir=rel_dir,
        tiles=tiles,
        image=atlas_image,
        image_written_at=t + 0.5,
        written_at=t + 2.0,
        sample_written_at=1.0 + g * 0.2,
        alignment_tile_id=tiles[len(tiles) // 2].tile_id,
        alignment_rotation=rng.uniform(-0.2, 0.2),
    )
    return atlas, t + 3.0


def _plan_squares(rng: random.Random, ids: _Ids, spec: PresetSpec, atlas: AtlasPlan) -> list[GridSquarePlan]:
    cols = math.ceil(math.sqrt(spec.tiles))
    rows = math.ceil(spec.tiles / cols)
    width = cols * TILE_ATLAS_W
    height = rows * TILE_ATLAS_H
    lattice = [
        ((i + 0.5) * SQUARE_PITCH_PX, (j + 0.5) * SQUARE_PITCH_PX)
        for j in range(int(height // SQUARE_PITCH_PX))
        for i in range(int(width // SQUARE_PITCH_PX))
    ]
    tiles_by_cell = {(t.atlas_position[0], t.atlas_position[1]): t for t in atlas.tiles}
    # Only lattice points that fall on an existing tile (the last row of the mosaic can be partial).
    usable = [
        p
        for p in lattice
        if (int(p[0] // TILE_ATLAS_W) * TILE_ATLAS_W, int(p[1] // TILE_ATLAS_H) * TILE_ATLAS_H)
        in tiles_by_cell
    ]
    if len(usable) < spec.squares:
        raise ValueError(f"preset needs {spec.squares} squares but the atlas has room for {len(usable)}")
    chosen = sorted(rng.sample(usable, spec.squares), key=lambda p: (p[1], p[0]))
    imaged_idx = set(rng.sample(range(spec.squares), spec.imaged_squares))
    ratio = ATLAS_PIXEL_M / TILE_PIXEL_M
    squares: list[GridSquarePlan] = []
    for order, (lx, ly) in enumerate(chosen):
        square_id = ids(5)
        cx = lx + rng.uniform(-6.0, 6.0)
        cy = ly + rng.uniform(-6.0, 6.0)
        w = rng.uniform(128.0, 142.0)
        h = w * rng.uniform(0.93, 1.0)
        stage = Stage(
            x=(cx - width / 2) * ATLAS_PIXEL_M,
            y=(cy - height / 2) * ATLAS_PIXEL_M,
            z=9.2991027587200039e-05 + rng.uniform(-2e-6, 2e-6),
        )
        aligned = Stage(x=stage.x + rng.uniform(-2e-6, 2e-6), y=stage.y + rng.uniform(-2e-6, 2e-6), z=0.0)
        tile = tiles_by_cell[(int(cx // TILE_ATLAS_W) * TILE_ATLAS_W, int(cy // TILE_ATLAS_H) * TILE_ATLAS_H)]
        tile.square_ids.append(square_id)
        positions = [
            TilePosition(
                ids(),
                tile.tile_id,
                ((cx - tile.atlas_position[0]) * ratio, (cy - tile.atlas_position[1]) * ratio),
                (w * ratio, h * ratio),
            )
        ]
        # A square near a tile edge also shows on the neighbouring tile (as TilePositions does in real
        # atlases).
        nx = tile.atlas_position[0] + (TILE_ATLAS_W if cx - tile.atlas_position[0] > TILE_ATLAS_W - 90 else 0)
        if nx != tile.atlas_position[0] and (nx, tile.atlas_position[1]) in tiles_by_cell:
            other = tiles_by_cell[(nx, tile.atlas_position[1])]
            positions.append(
                TilePosition(
                    ids(),
                    other.tile_id,
                    ((cx - nx) * ratio, (cy - other.atlas_position[1]) * ratio),
                    (w * ratio, h * ratio),
                )
            )
        imaged = order in imaged_idx
        squares.append(
            GridSquarePlan(
                square_id=square_id,
                order=order,
                stage=stage,
                aligned_stage=aligned,
                rotation=rng.uniform(-0.5, 0.5),
                atlas_center=(round(cx, 3), round(cy, 3)),
                atlas_size=(round(w, 4), round(h, 4)),
                physical=(
                    stage.x - w * ATLAS_PIXEL_M / 2,
                    stage.y - h * ATLAS_PIXEL_M / 2,
                    w * ATLAS_PIXEL_M,
                    h * ATLAS_PIXEL_M,
                ),
                atlas_rotation=rng.uniform(-0.3, 0.3),
                atlas_quality=rng.uniform(0.6, 1.4),
                category=rng.randrange(0, 4),
                features=[rng.uniform(-0.8, 0.8) for _ in range(5)],
                tile_id=tile.tile_id,
                tile_positions=positions,
                selected=imaged or rng.random() < 0.3,
                imaged=imaged,
            )
        )
    return squares


def _outline(rng: random.Random) -> list[tuple[float, float]]:
    """A square outline in grid-square image pixels (an octagon-ish polygon around the image centre)."""
    cx, cy = READOUT_W / 2, READOUT_H / 2
    half = rng.uniform(780.0, 860.0)
    corners: list[tuple[float, float]] = []
    for k in range(8):
        angle = math.pi / 4 * k + math.pi / 8
        r = half / math.cos(math.pi / 8) if k % 2 else half * 1.05
        corners.append((round(cx + r * math.cos(angle)), round(cy + r * math.sin(angle))))
    return corners


def _plan_grid(
    rng: random.Random,
    ids: _Ids,
    spec: PresetSpec,
    base: datetime,
    storage: str,
    label: str,
    g: int,
    atlas: AtlasPlan,
    t: float,
) -> tuple[GridPlan, float]:
    started = base + timedelta(seconds=t) + _micro(rng)
    session_name = (
        f"Supervisor_{started.strftime('%Y%m%d_%H%M%S')}_{rng.randrange(1, 99)}_{label}_grid{g + 1}"
    )
    session_id = ids()
    storage_folder_id = ids()
    sample_xml_id = ids()
    misc = [ids() for _ in range(4)]
    squares = _plan_squares(rng, ids, spec, atlas)
    # Acquisition template: one area per micrograph of a hole, ids in steps of about 3 (as observed).
    areas: list[TemplateArea] = []
    first_area = ids(3)
    for j in range(spec.micrographs_per_hole):
        area_id = first_area + 3 * j + (7 if j % 2 else 0)
        angle = 2 * math.pi * j / max(spec.micrographs_per_hole, 1)
        areas.append(
            TemplateArea(
                area_id=area_id,
                setting_id=area_id + 2,
                shift=(round(360 * math.cos(angle), 4), round(360 * math.sin(angle), 4)),
                beam_shift=(round(0.09 * math.cos(angle), 6), round(0.09 * math.sin(angle), 6)),
            )
        )
    for _ in range(spec.micrographs_per_hole * 3 + 10):
        ids()  # the template ids above are reserved from the counter
    defocus_values = [-1e-06, -1.25e-06, -1.5e-06, -1.75e-06, -2e-06, -2.25e-06, -2.5e-06, -3e-06]

    session_written_at = [t]
    metadata_at = t + 5.0
    t = metadata_at + 0.05 * len(squares) + 30.0
    hole_counter = 0
    for square in squares:
        if not square.imaged:
            continue
        square.collection_id = ids()
        square.outline = _outline(rng)
        acquired = base + timedelta(seconds=t) + _micro(rng)
        square.image = _image(
            rng,
            f"GridSquare_{acquired.strftime('%Y%m%d_%H%M%S')}",
            acquired,
            Stage(square.stage.x, square.stage.y, square.stage.z, a=-0.00023951923150003149, b=0.0167836925),
            pixel=GS_PIXEL_M,
            mag=580.0,
            defocus=-0.00025 + rng.uniform(-5e-6, 5e-6),
            applied=-0.00025,
            exposure=2.0,
        )
        square.image.dose_on_camera = rng.uniform(12.0, 20.0)
        square.image_written_at = t + 1.0
        square.holes_found_at = t + 15.0
        t += 20.0
        _plan_holes(rng, ids, spec, square)
        for hole in square.holes:
            if not hole.imaged:
                continue
            t += 6.0 + rng.uniform(0.0, 2.0)
            for shot, offset in enumerate((rng.uniform(18.0, 30.0), rng.uniform(1.0, 4.0))):
                at = t + 10.0 * shot
                direction = rng.uniform(0, 2 * math.pi)
                dx, dy = offset * math.cos(direction), offset * math.sin(direction)
                stage = Stage(
                    hole.stage.x + (dx * FH_PIXEL_M if shot == 0 else 0.0),
                    hole.stage.y + (dy * FH_PIXEL_M if shot == 0 else 0.0),
                    hole.stage.z,
                    hole.stage.a,
                    hole.stage.b,
                )
                acquired = base + timedelta(seconds=at) + _micro(rng)
                image = _image(
                    rng,
                    f"FoilHole_{hole.hole_id}_{acquired.strftime('%Y%m%d_%H%M%S')}",
                    acquired,
                    stage,
                    pixel=FH_PIXEL_M,
                    mag=15000.0,
                    defocus=-7.28e-05 + rng.uniform(-1e-6, 1e-6),
                    applied=-2e-05,
                    exposure=2.0,
                )
                image.found_center = (round(READOUT_W / 2 + dx, 3), round(READOUT_H / 2 + dy, 3))
                image.found_size = round(HOLE_SIZE_M / FH_PIXEL_M * rng.uniform(0.97, 1.03), 3)
                image.found_quality = round(rng.uniform(0.7, 0.95), 6)
                image.dose_on_camera = rng.uniform(30.0, 40.0)
                hole.images.append(image)
                hole.image_written_at.append(at + 1.0)
            t += 14.0
            applied = defocus_values[hole_counter % len(defocus_values)]
            hole_counter += 1
            for area in areas:
                t += 3.0 if rng.random() < 0.52 else 4.0
                acquired = base + timedelta(seconds=t) + _micro(rng)
                image = _image(
                    rng,
                    f"FoilHole_{hole.hole_id}_Data_{area.area_id}_{area.setting_id}_{acquired.strftime('%Y%m%d_%H%M%S')}",
                    acquired,
                    hole.stage,
                    pixel=MIC_PIXEL_M,
                    mag=165000.0,
                    defocus=applied + rng.uniform(-2e-7, 2e-7),
                    applied=applied,
                    exposure=1.7,
                )
                image.beam_shift = area.beam_shift
                image.dose = rng.uniform(3.8e21, 4.2e21)
                image.dose_on_camera = image.dose * 1e-20 * (MIC_PIXEL_M * 1e10) ** 2
                hole.micrographs.append(MicrographPlan(ids(), area.area_id, area.setting_id, image, t + 1.0))
            if rng.random() < 0.05:
                t += rng.uniform(15.0, 60.0)  # occasional pause (refill, autofocus) as in real sessions
        square.finished_at = t + 2.0
        session_written_at.append(t + 3.0)
        t += 30.0
    ended = base + timedelta(seconds=t) + _micro(rng)
    session_written_at.append(t)
    grid = GridPlan(
        index=g,
        session_id=session_id,
        session_name=session_name,
        sample_xml_id=sample_xml_id,
        storage_folder_id=storage_folder_id,
        misc_ids=misc,
        started=started,
        ended=ended,
        atlas=atlas,
        atlas_windows_path=f"{atlas.storage_folder_windows}\\Atlas\\Atlas.dm",
        areas=areas,
        defocus_values=defocus_values,
        squares=squares,
        session_written_at=session_written_at,
        metadata_written_at=metadata_at,
    )
    return grid, t


def _plan_holes(rng: random.Random, ids: _Ids, spec: PresetSpec, square: GridSquarePlan) -> None:
    """Holes on a lattice around the image centre; the outermost are near the grid bar."""
    spacing = HOLE_SPACING_M / GS_PIXEL_M
    cx, cy = READOUT_W / 2, READOUT_H / 2
    reach = int(math.sqrt(spec.holes_per_square)) + 2
    points = [
        (cx + i * spacing + (spacing / 2 if j % 2 else 0.0), cy + j * spacing * 0.866)
        for j in range(-reach, reach + 1)
        for i in range(-reach, reach + 1)
    ]
    points.sort(key=lambda p: ((p[0] - cx) ** 2 + (p[1] - cy) ** 2, p[1], p[0]))
    points = points[: spec.holes_per_square]
    n_ngb = spec.near_grid_bar_per_square
    n_unimaged = spec.unimaged_per_square
    assert square.image is not None
    for order, (px, py) in enumerate(points):
        near = order >= len(points) - n_ngb
        unimaged = not near and order >= len(points) - n_ngb - n_unimaged
        stage = Stage(
            x=square.stage.x + (px - cx) * GS_PIXEL_M,
            y=square.stage.y + (py - cy) * GS_PIXEL_M,
            z=square.stage.z,
            a=square.image.stage.a,
            b=square.image.stage.b,
        )
        square.holes.append(
            FoilHolePlan(
                hole_id=ids(2),
                order=order,
                center=(round(px, 1), round(py, 1)),
                diameter_px=round(HOLE_SIZE_M / GS_PIXEL_M, 5),
                stage=stage,
                near_grid_bar=near,
                imaged=not near and not unimaged,
                quality=1.0,
                intensity_mean=rng.uniform(600.0, 800.0),
                intensity_std=rng.uniform(20.0, 100.0),
            )
        )


__all__ = ["plan_session"]
