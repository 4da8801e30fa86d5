"""A session plan's file writes: every file version as a :class:`FileOp` at a virtual time, and disorder.

:func:`build_ops` turns a :class:`~testbed.epu.plan.SessionPlan` into the time-sorted list of write operations
(rendering is deferred to each op's ``render``); :func:`apply_disorder` moves ops just before their parent.
:mod:`testbed.epu.generator` schedules and performs them.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from testbed.epu import templates
from testbed.epu.plan import GridPlan, SessionPlan

PREVIEW_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeF"
    "xlZ2P/wAALCAAQABABAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1Fh"
    "ByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJ"
    "WWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/AObsrPpxXQWVn04osrPp"
    "xXQWVn04r//Z"
)
"""A 16x16 greyscale JPEG used as every preview (real previews are 50-100 KB; size does not matter here)."""


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


__all__ = [
    "PREVIEW_JPEG",
    "FileOp",
    "apply_disorder",
    "build_ops",
]
