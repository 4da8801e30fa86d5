"""Write a synthetic EPU visit into a folder, progressively, as EPU would.

:func:`generate` is the one-call form; :class:`SessionGenerator` gives the incremental forms:
:meth:`~SessionGenerator.
iter_writes` (a blocking iterator, one file per step, so tests can interleave checks) and
:meth:`~SessionGenerator.
run_async` (for the demo, which writes over 15-30 s while the agent runs in the same event loop).

Behaviours reproduced from epu-format.md section 8.2:

* **Timing**: ``fast`` (no pauses), ``realtime`` (EPU cadence: micrographs 3-4 s apart), ``accelerated`` (the
same
  cadence divided by ``speed``, or fitted to ``duration_s``), ``bursts`` (files buffered and dumped in groups
  of up to
  ``burst_size``, pausing between groups as the accelerated cadence would).
* **Rewrites**: ``EpuSession.dm`` is rewritten as squares complete (the last time with ``EndDateTime``); a
square's
  ``Metadata/GridSquare_<id>.dm`` grows from a hole-less file to one with holes, then to the final one with
  images
  and micrographs. Rewrites are full new versions, written in place (or by rename, see ``rename_writes``).
* **Disorder**: with probability ``disorder`` a file is written just before its parent (a grid-square ``.dm``
  before ``EpuSession.dm``, a foil-hole image before the ``.dm`` that lists the hole, a micrograph before its
  foil-hole image, a preview before its XML).
* **Partial writes**: with probability ``partial_writes`` a text file is written in ``partial_chunks`` chunks
with
  ``partial_pause_s`` between them, so a watcher can observe a truncated file.

The manifest (:mod:`testbed.epu.manifest`) is written first, atomically, as ``<out>/manifest.json``.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from testbed.epu import templates
from testbed.epu.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestAcquisition,
    ManifestAtlas,
    ManifestAtlasTile,
    ManifestFoilHole,
    ManifestGrid,
    ManifestGridSquare,
    ManifestMicrograph,
    ManifestTileSquarePosition,
)
from testbed.epu.plan import (
    CAMERA_NAME,
    COMPUTER_NAME,
    DETECTOR_COMMERCIAL_NAME,
    EPU_VERSION,
    INSTRUMENT_ID,
    INSTRUMENT_MODEL,
    READOUT_H,
    READOUT_W,
    GridPlan,
    SessionPlan,
    plan_session,
)

PREVIEW_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeF"
    "xlZ2P/wAALCAAQABABAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1Fh"
    "ByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJ"
    "WWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/AObsrPpxXQWVn04osrPp"
    "xXQWVn04r//Z"
)
"""A 16x16 greyscale JPEG used as every preview (real previews are 50-100 KB; size does not matter here)."""


class TimingMode(enum.StrEnum):
    """How the generator paces its writes."""

    FAST = "fast"
    REALTIME = "realtime"
    ACCELERATED = "accelerated"
    BURSTS = "bursts"


class GeneratorConfig(BaseModel):
    """Options of :class:`SessionGenerator` (all have working defaults: ``small``, seed 0, fast)."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "small"
    """``small`` (demo size), ``medium`` (about 10k files) or ``large`` (about 100k files)."""
    seed: int = 0
    grids: int | None = None
    """Number of grids (EPU sessions); ``None`` = the preset's default."""
    timing: TimingMode = TimingMode.FAST
    speed: float = Field(default=10.0, gt=0)
    """``accelerated``/``bursts``: virtual seconds per wall-clock second."""
    duration_s: float | None = Field(default=None, gt=0)
    """``accelerated``/``bursts``: fit the whole visit into about this many seconds (overrides ``speed``)."""
    max_delay_s: float | None = Field(default=None, ge=0)
    """Cap on any single pause (like epuplayer's ``--max-delay``)."""
    burst_size: int = Field(default=200, ge=1)
    disorder: float = Field(default=0.0, ge=0, le=1)
    partial_writes: float = Field(default=0.0, ge=0, le=1)
    partial_chunks: int = Field(default=3, ge=2)
    partial_pause_s: float = Field(default=0.05, ge=0)
    rename_writes: float = Field(default=0.0, ge=0, le=1)
    """Probability that a file is written to a temporary name and renamed into place (a ``moved`` event)."""
    rename_rewrites: bool = False
    """Write every rewrite of an existing file (``EpuSession.dm``, grid-square ``.dm``) by rename, never in place.
    A watcher that diffs sizes (epuplayer's recorder) mistakes an in-place rewrite for an append or a truncation."""
    rename_pause_s: float = Field(default=0.0, ge=0)
    """Pause between finishing a temporary file and renaming it into place. A watcher that reads each file
    when its event arrives (epuplayer's recorder) loses a file renamed before it looked; this gives it time."""
    previews: bool = True
    """Write a JPEG preview next to every image XML, as EPU does."""
    storage_windows: str | None = None
    """Windows storage folder written into the files; default ``Z:\\<output folder name>``."""
    label: str = "testbed"
    write_manifest: bool = True


@dataclass(slots=True)
class FileOp:
    """One planned write: a file version at a virtual time."""

    at: float
    rel_path: str
    kind: str
    render: Callable[[], bytes]
    parent: int | None
    """Index (in the op list) of the op that writes the parent entity's first file, for disorder."""
    rewrite: bool = False


@dataclass(slots=True, frozen=True)
class WriteEvent:
    """What one step of the generator did."""

    index: int
    total: int
    rel_path: str
    kind: str
    size: int
    at: float
    """Virtual time of the write (seconds from the start of the visit)."""
    rewrite: bool
    partial: bool
    renamed: bool


def _text(render: Callable[[], str]) -> bytes:
    return render().encode("utf-8")


def _preview() -> bytes:
    return PREVIEW_JPEG


def build_ops(plan: SessionPlan, *, previews: bool = True) -> list[FileOp]:
    """Every file version of ``plan`` as write operations, sorted by virtual time (stable)."""
    ops: list[FileOp] = []

    def add(
        at: float,
        rel: str,
        kind: str,
        render: Callable[[], bytes],
        parent: int | None = None,
        rewrite: bool = False,
    ) -> int:
        ops.append(FileOp(at, rel, kind, render, parent, rewrite))
        return len(ops) - 1

    def add_image(at: float, rel_xml: str, kind: str, render: Callable[[], bytes], parent: int | None) -> int:
        index = add(at, rel_xml, kind, render, parent)
        if previews:
            add(at + 0.01, rel_xml[:-4] + ".jpg", "jpg", _preview, index)
        return index

    screening = plan.screening
    sdir = screening.rel_dir
    add(
        0.0,
        f"{sdir}/ScreeningSession.dm",
        "screening_session",
        partial(_text, partial(templates.screening_session_dm, plan)),
    )
    add(
        0.5,
        f"{sdir}/Atlas/Atlas.dm",
        "atlas",
        partial(_text, partial(templates.screening_root_atlas_dm, plan)),
    )
    for grid in plan.grids:
        atlas = grid.atlas
        add(
            atlas.sample_written_at,
            f"{sdir}/Sample{atlas.slot}/Sample.dm",
            "sample",
            partial(_text, partial(templates.sample_dm, plan, grid)),
        )
        for tile in atlas.tiles:
            add_image(
                tile.written_at,
                f"{atlas.rel_dir}/{tile.image.stem}.xml",
                "atlas_tile",
                partial(_text, partial(templates.microscope_image, tile.image, "tile")),
                None,
            )
        add_image(
            atlas.image_written_at,
            f"{atlas.rel_dir}/{atlas.image.stem}.xml",
            "atlas_image",
            partial(_text, partial(templates.microscope_image, atlas.image, "atlas")),
            None,
        )
        add(
            atlas.written_at, atlas.rel_path, "atlas", partial(_text, partial(templates.atlas_dm, plan, grid))
        )
    for grid in plan.grids:
        _grid_ops(plan, grid, add, add_image)
    order = sorted(range(len(ops)), key=lambda i: (ops[i].at, i))
    position = {old: new for new, old in enumerate(order)}
    return [
        FileOp(
            op.at,
            op.rel_path,
            op.kind,
            op.render,
            None if op.parent is None else position[op.parent],
            op.rewrite,
        )
        for op in (ops[i] for i in order)
    ]


def _grid_ops(
    plan: SessionPlan,
    grid: GridPlan,
    add: Callable[..., int],
    add_image: Callable[[float, str, str, Callable[[], bytes], int | None], int],
) -> None:
    root = grid.rel_dir
    session_rel = f"{root}/EpuSession.dm"
    times = grid.session_written_at
    first_session = -1
    for k, at in enumerate(times):
        index = add(
            at,
            session_rel,
            "session",
            partial(_text, partial(templates.epu_session, plan, grid, final=k == len(times) - 1)),
            None,
            k > 0,
        )
        if k == 0:
            first_session = index
    for i, square in enumerate(grid.squares):
        rel = f"{root}/Metadata/GridSquare_{square.square_id}.dm"
        v0 = add(
            grid.metadata_written_at + 0.05 * i,
            rel,
            "gridsquare_metadata",
            partial(_text, partial(templates.gridsquare_dm, plan, grid, square, 0)),
            first_session,
        )
        if not square.imaged or square.image is None:
            continue
        folder = f"{root}/Images-Disc1/GridSquare_{square.square_id}"
        add_image(
            square.image_written_at,
            f"{folder}/{square.image.stem}.xml",
            "gridsquare_image",
            partial(_text, partial(templates.microscope_image, square.image, "gridsquare")),
            v0,
        )
        v1 = add(
            square.holes_found_at,
            rel,
            "gridsquare_metadata",
            partial(_text, partial(templates.gridsquare_dm, plan, grid, square, 1)),
            None,
            True,
        )
        for hole in square.holes:
            first_image = v1
            for k, (image, at) in enumerate(zip(hole.images, hole.image_written_at, strict=True)):
                index = add_image(
                    at,
                    f"{folder}/FoilHoles/{image.stem}.xml",
                    "foilhole_image",
                    partial(_text, partial(templates.microscope_image, image, "foilhole")),
                    v1,
                )
                if k == 0:
                    first_image = index
            for mic in hole.micrographs:
                add_image(
                    mic.written_at,
                    f"{folder}/Data/{mic.image.stem}.xml",
                    "micrograph",
                    partial(_text, partial(templates.microscope_image, mic.image, "micrograph")),
                    first_image,
                )
        add(
            square.finished_at,
            rel,
            "gridsquare_metadata",
            partial(_text, partial(templates.gridsquare_dm, plan, grid, square, 2)),
            None,
            True,
        )


def apply_disorder(ops: list[FileOp], probability: float, rng: random.Random) -> list[FileOp]:
    """Reorder: each op with a parent moves just before it with ``probability`` (stable otherwise)."""
    if probability <= 0:
        return list(ops)
    keys: list[tuple[float, float]] = []
    for i, op in enumerate(ops):
        key = (op.at, float(i))
        if op.parent is not None and rng.random() < probability:
            parent_key = keys[op.parent]
            key = (parent_key[0], parent_key[1] - 0.5 + i * 1e-9)
        keys.append(key)
    order = sorted(range(len(ops)), key=lambda i: keys[i])
    return [ops[i] for i in order]


def build_manifest(plan: SessionPlan, ops: list[FileOp]) -> Manifest:
    """The ground truth of ``plan`` (see :mod:`testbed.epu.manifest`)."""
    files: dict[str, int] = {}
    seen: set[str] = set()
    for op in ops:
        if op.rel_path not in seen:
            seen.add(op.rel_path)
            files[op.kind] = files.get(op.kind, 0) + 1
    manifest = Manifest(
        preset=plan.preset,
        seed=plan.seed,
        grids_count=len(plan.grids),
        storage_path=plan.storage_windows,
        files=dict(sorted(files.items())),
        total_files=len(seen),
    )
    for grid in plan.grids:
        _grid_manifest(plan, grid, manifest)
    return manifest


def _grid_manifest(plan: SessionPlan, grid: GridPlan, manifest: Manifest) -> None:
    key = grid.rel_dir
    atlas = grid.atlas
    manifest.acquisitions.append(
        ManifestAcquisition(
            acquisition_key=key,
            session_id=str(grid.session_id),
            name=grid.session_name,
            start_time=grid.started,
            end_time=grid.ended,
            storage_path=plan.storage_windows,
            atlas_path=grid.atlas_windows_path,
            clustering_mode="NoClustering",
            clustering_radius_m=0.0,
            instrument_model=INSTRUMENT_MODEL,
            instrument_id=INSTRUMENT_ID,
            computer_name=COMPUTER_NAME,
            epu_version=EPU_VERSION,
            session_dir=grid.rel_dir,
        )
    )
    manifest.grids.append(
        ManifestGrid(
            acquisition_key=key,
            name=grid.session_name,
            data_dir=grid.rel_dir,
            atlas_dir=atlas.rel_dir,
            scan_start_time=grid.started,
            scan_end_time=grid.ended,
        )
    )
    manifest.atlases.append(
        ManifestAtlas(
            acquisition_key=key,
            atlas_id=str(atlas.atlas_id),
            name="Atlas",
            description=f"Atlas for autoloader slot {atlas.slot}",
            acquisition_date=atlas.acquired,
            start_time=atlas.started,
            storage_folder=atlas.storage_folder_windows,
            path=atlas.rel_path,
            tile_count=len(atlas.tiles),
        )
    )
    squares = {s.square_id: s for s in grid.squares}
    for tile in atlas.tiles:
        manifest.atlas_tiles.append(
            ManifestAtlasTile(
                acquisition_key=key,
                atlas_id=str(atlas.atlas_id),
                tile_id=str(tile.tile_id),
                tile_index=tile.index,
                position_x=tile.atlas_position[0],
                position_y=tile.atlas_position[1],
                size_x=tile.atlas_position[2],
                size_y=tile.atlas_position[3],
                file_format="Mrc",
                base_filename=tile.image.stem,
                gridsquares=[
                    ManifestTileSquarePosition(
                        gridsquare_id=str(sid),
                        center_x=squares[sid].atlas_center[0],
                        center_y=squares[sid].atlas_center[1],
                        size_width=squares[sid].atlas_size[0],
                        size_height=squares[sid].atlas_size[1],
                    )
                    for sid in tile.square_ids
                ],
            )
        )
    for square in grid.squares:
        image = square.image if square.imaged else None
        folder = f"{grid.rel_dir}/Images-Disc1/GridSquare_{square.square_id}"
        manifest.gridsquares.append(
            ManifestGridSquare(
                acquisition_key=key,
                gridsquare_id=str(square.square_id),
                atlas_node_id=square.square_id,
                state=square.final_state,
                selected=square.selected,
                unusable=False,
                rotation=square.rotation,
                stage_position_x=square.stage.x,
                stage_position_y=square.stage.y,
                stage_position_z=square.stage.z,
                center_x=square.atlas_center[0],
                center_y=square.atlas_center[1],
                size_width=square.atlas_size[0],
                size_height=square.atlas_size[1],
                physical_x=square.physical[0],
                physical_y=square.physical[1],
                tile_id=str(square.tile_id),
                imaged=square.imaged,
                image_path=None if image is None else f"{folder}/{image.stem}.xml",
                acquisition_datetime=None if image is None else image.acquired,
                defocus=None if image is None else image.defocus_m,
                applied_defocus=None if image is None else image.applied_defocus_m,
                magnification=None if image is None else image.magnification,
                pixel_size=None if image is None else image.pixel_size_m,
                detector_name=None if image is None else CAMERA_NAME,
                foilhole_count=len(square.holes),
            )
        )
        for hole in square.holes:
            newest = hole.images[-1] if hole.images else None
            manifest.foilholes.append(
                ManifestFoilHole(
                    acquisition_key=key,
                    foilhole_id=str(hole.hole_id),
                    gridsquare_id=str(square.square_id),
                    center_x=hole.center[0],
                    center_y=hole.center[1],
                    size_width=hole.diameter_px,
                    size_height=hole.diameter_px,
                    x_stage_position=hole.stage.x,
                    y_stage_position=hole.stage.y,
                    quality=hole.quality,
                    rotation=0.0,
                    is_near_grid_bar=hole.near_grid_bar,
                    selected=hole.selected,
                    state=hole.final_state,
                    imaged=hole.imaged,
                    image_paths=[f"{folder}/FoilHoles/{img.stem}.xml" for img in hole.images],
                    found_center_x=None
                    if newest is None or newest.found_center is None
                    else newest.found_center[0],
                    found_center_y=None
                    if newest is None or newest.found_center is None
                    else newest.found_center[1],
                    found_size=None if newest is None else newest.found_size,
                    found_quality=None if newest is None else newest.found_quality,
                )
            )
            for mic in hole.micrographs:
                img = mic.image
                manifest.micrographs.append(
                    ManifestMicrograph(
                        acquisition_key=key,
                        micrograph_id=img.stem,
                        foilhole_id=str(hole.hole_id),
                        gridsquare_id=str(square.square_id),
                        location_id=str(mic.area_id),
                        setting_id=str(mic.setting_id),
                        unique_id=img.unique_id,
                        path=f"{folder}/Data/{img.stem}.xml",
                        acquisition_datetime=img.acquired,
                        defocus=img.defocus_m,
                        applied_defocus=img.applied_defocus_m,
                        detector_name=CAMERA_NAME,
                        detector_commercial_name=DETECTOR_COMMERCIAL_NAME,
                        energy_filter=True,
                        phase_plate=False,
                        image_size_x=READOUT_W,
                        image_size_y=READOUT_H,
                        binning_x=2,
                        binning_y=2,
                        pixel_size=img.pixel_size_m,
                        exposure_time=img.exposure_time_s,
                        dose=img.dose,
                    )
                )


def _write_chunk(path: Path, chunk: bytes, *, append: bool) -> None:
    """Write one chunk: the first truncates (a rewrite starts empty, as an in-place save does), later ones
    append. Each chunk is closed, so a reader sees exactly the bytes written so far."""
    with open(path, "ab" if append else "wb") as handle:
        handle.write(chunk)


class SessionGenerator:
    """Plans a visit at construction; writes it with :meth:`run`, :meth:`iter_writes` or :meth:`run_async`.

    ``out_dir`` plays the EPU storage folder; it is created if missing. The plan, the op list and the manifest
    are available before anything is written.
    """

    def __init__(self, out_dir: str | os.PathLike[str], config: GeneratorConfig | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.config = config or GeneratorConfig()
        storage = self.config.storage_windows or f"Z:\\{self.out_dir.resolve().name or 'epu'}"
        self.plan = plan_session(
            preset=self.config.preset,
            seed=self.config.seed,
            grids=self.config.grids,
            storage_windows=storage,
            label=self.config.label,
        )
        # Separate random streams: content depends only on (preset, seed, grids); order and write style on the
        # rest.
        self._rng = random.Random(f"epu-testbed-writes/{self.config.seed}")
        self.ops = apply_disorder(
            build_ops(self.plan, previews=self.config.previews), self.config.disorder, self._rng
        )
        self.manifest = build_manifest(self.plan, self.ops)
        self._written = 0

    @property
    def total(self) -> int:
        """Number of write operations (file versions, rewrites included)."""
        return len(self.ops)

    @property
    def virtual_span_s(self) -> float:
        """Virtual duration of the visit: seconds between the first and the last write."""
        if not self.ops:
            return 0.0
        times = [op.at for op in self.ops]
        return max(times) - min(times)

    def _speed(self) -> float:
        if self.config.duration_s is not None and self.virtual_span_s > 0:
            return self.virtual_span_s / self.config.duration_s
        return self.config.speed

    def _delays(self) -> list[float]:
        """Wall-clock pause before each op."""
        mode = self.config.timing
        n = len(self.ops)
        if mode is TimingMode.FAST or n == 0:
            return [0.0] * n
        divisor = 1.0 if mode is TimingMode.REALTIME else self._speed()
        delays = [0.0]
        for prev, op in zip(self.ops, self.ops[1:], strict=False):
            delays.append(max(0.0, op.at - prev.at) / divisor)
        if mode is TimingMode.BURSTS:
            # Buffer: no pause inside a burst; the burst's accumulated time is paid once before it.
            grouped: list[float] = []
            i = 0
            while i < n:
                size = self._rng.randint(max(1, self.config.burst_size // 4), self.config.burst_size)
                chunk = delays[i : i + size]
                grouped.append(sum(chunk))
                grouped.extend([0.0] * (len(chunk) - 1))
                i += size
            delays = grouped
        cap = self.config.max_delay_s
        return [min(d, cap) if cap is not None else d for d in delays]

    def _prepare(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.config.write_manifest:
            self.manifest.write(self.out_dir / MANIFEST_NAME)

    def _plan_write(self, op: FileOp) -> tuple[bytes, list[bytes], bool]:
        """Content, its chunks (one unless partial) and whether to write by rename."""
        data = op.render()
        partial_write = op.kind != "jpg" and self._rng.random() < self.config.partial_writes
        renamed = self._rng.random() < self.config.rename_writes or (
            op.rewrite and self.config.rename_rewrites
        )
        if partial_write and len(data) > self.config.partial_chunks:
            step = -(-len(data) // self.config.partial_chunks)
            chunks = [data[i : i + step] for i in range(0, len(data), step)]
        else:
            chunks = [data]
        return data, chunks, renamed

    def _event(self, index: int, op: FileOp, data: bytes, chunks: list[bytes], renamed: bool) -> WriteEvent:
        return WriteEvent(
            index=index,
            total=len(self.ops),
            rel_path=op.rel_path,
            kind=op.kind,
            size=len(data),
            at=op.at,
            rewrite=op.rewrite,
            partial=len(chunks) > 1,
            renamed=renamed,
        )

    def _target(self, op: FileOp) -> Path:
        target = self.out_dir.joinpath(*PurePosixPath(op.rel_path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def iter_writes(self) -> Iterator[WriteEvent]:
        """Write the visit, one file version per step, sleeping as the timing mode says (blocking)."""
        self._prepare()
        for index, (op, delay) in enumerate(zip(self.ops, self._delays(), strict=True)):
            if delay > 0.001:
                time.sleep(delay)
            data, chunks, renamed = self._plan_write(op)
            target = self._target(op)
            path = target.with_name(f".{target.name}.part") if renamed else target
            for k, chunk in enumerate(chunks):
                if k:
                    time.sleep(self.config.partial_pause_s)
                _write_chunk(path, chunk, append=k > 0)
            if renamed:
                if self.config.rename_pause_s:
                    time.sleep(self.config.rename_pause_s)
                path.replace(target)
            self._written += 1
            yield self._event(index, op, data, chunks, renamed)

    async def aiter_writes(self) -> AsyncIterator[WriteEvent]:
        """Like :meth:`iter_writes` but pausing with ``asyncio.sleep`` (file I/O is small and synchronous)."""
        await asyncio.to_thread(self._prepare)
        for index, (op, delay) in enumerate(zip(self.ops, self._delays(), strict=True)):
            if delay > 0.001:
                await asyncio.sleep(delay)
            data, chunks, renamed = self._plan_write(op)
            target = self._target(op)
            path = target.with_name(f".{target.name}.part") if renamed else target
            for k, chunk in enumerate(chunks):
                if k:
                    await asyncio.sleep(self.config.partial_pause_s)
                _write_chunk(path, chunk, append=k > 0)
            if renamed:
                if self.config.rename_pause_s:
                    await asyncio.sleep(self.config.rename_pause_s)
                path.replace(target)
            self._written += 1
            yield self._event(index, op, data, chunks, renamed)

    def write_final(self, select: Callable[[FileOp], bool] | None = None) -> list[Path]:
        """Write the final version of each file (or of those ``select`` accepts) at once, in write order.

        For tests and tools that need the end state of a big preset, or a sample of it, without its history.
        """
        self._prepare()
        final: dict[str, FileOp] = {}
        for op in self.ops:
            final[op.rel_path] = op  # later versions replace earlier ones; dict keeps first-write order
        written: list[Path] = []
        for op in final.values():
            if select is not None and not select(op):
                continue
            target = self._target(op)
            target.write_bytes(op.render())
            written.append(target)
        return written

    def run(self, on_write: Callable[[WriteEvent], None] | None = None) -> Manifest:
        """Write everything (blocking) and return the manifest."""
        for event in self.iter_writes():
            if on_write is not None:
                on_write(event)
        return self.manifest

    async def run_async(
        self, on_write: Callable[[WriteEvent], Awaitable[None] | None] | None = None
    ) -> Manifest:
        """Write everything without blocking the event loop between files; return the manifest."""
        async for event in self.aiter_writes():
            if on_write is not None:
                result = on_write(event)
                if isinstance(result, Awaitable):
                    await result
        return self.manifest


def generate(
    out_dir: str | os.PathLike[str],
    *,
    preset: str = "small",
    seed: int = 0,
    grids: int | None = None,
    timing: TimingMode | str = TimingMode.FAST,
    speed: float = 10.0,
    duration_s: float | None = None,
    max_delay_s: float | None = None,
    disorder: float = 0.0,
    partial_writes: float = 0.0,
    rename_writes: float = 0.0,
    rename_pause_s: float = 0.0,
    previews: bool = True,
    on_write: Callable[[WriteEvent], None] | None = None,
) -> Manifest:
    """Write a synthetic EPU visit into ``out_dir``; return its manifest (also in ``manifest.json``)."""
    config = GeneratorConfig(
        preset=preset,
        seed=seed,
        grids=grids,
        timing=TimingMode(timing),
        speed=speed,
        duration_s=duration_s,
        max_delay_s=max_delay_s,
        disorder=disorder,
        partial_writes=partial_writes,
        rename_writes=rename_writes,
        rename_pause_s=rename_pause_s,
        previews=previews,
    )
    return SessionGenerator(out_dir, config).run(on_write)


__all__ = [
    "PREVIEW_JPEG",
    "FileOp",
    "GeneratorConfig",
    "SessionGenerator",
    "TimingMode",
    "WriteEvent",
    "apply_disorder",
    "build_manifest",
    "build_ops",
    "generate",
]
