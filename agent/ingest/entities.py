"""From parse results to contributions, and from merged contributions to wire payloads.

:func:`contributions_for` turns one parsed file into :class:`~agent.ingest.store.Contribution` rows: per entity,
the fields its file kind *provides* (``converters.merge.PROVIDED_FIELDS``) plus the identity fields (natural ids
and the deterministic uuids of the entity and its parent). :func:`render` turns the merged fields of an entity back
into its domain model and through ``EntityConverter`` into the request body the backend receives; it also decides
whether the entity is kept off the backend (near-grid-bar holes when configured, as SmartEM's client does).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.ingest.identity import EntityKind, acquisition_key, entity_uuid
from agent.ingest.store import SYNTHESIZED_RANK, SYNTHESIZED_SOURCE, BuildParent, Contribution, Render
from converters.entity_converter import EntityConverter
from converters.merge import provided_fields
from converters.models import (
    AcquisitionData,
    AtlasData,
    FoilHoleData,
    GridData,
    GridSquareData,
    MicrographData,
)
from converters.parse import (
    ParsedAtlas,
    ParsedFile,
    ParsedFoilHoleImage,
    ParsedFractions,
    ParsedGridSquareImage,
    ParsedGridSquareMetadata,
    ParsedMicrograph,
    ParsedSession,
)
from converters.paths import EpuFileKind
from converters.requests import to_wire

#: Merge rank of each source: a higher rank's fields override a lower one's where two sources set the same field
#: (with ``PROVIDED_FIELDS`` they rarely overlap; the grid-square image's ``session_root`` equals the .dm's).
SOURCE_RANK: dict[EpuFileKind, int] = {
    EpuFileKind.SESSION: 0,
    EpuFileKind.ATLAS: 1,
    EpuFileKind.GRIDSQUARE_METADATA: 2,
    EpuFileKind.GRIDSQUARE_IMAGE: 3,
    EpuFileKind.FOILHOLE_IMAGE: 4,
    EpuFileKind.MICROGRAPH: 5,
    EpuFileKind.FRACTIONS: 6,
}

_UUID_FIELDS = frozenset(
    {"uuid", "grid_uuid", "acquisition_uuid", "gridsquare_uuid", "foilhole_uuid", "atlas_uuid"}
)


def norm_path(path: str | os.PathLike[str]) -> str:
    """Canonical form of a local path, used to match an atlas file with the session that names it."""
    return os.path.normcase(str(Path(path).absolute()))


def _dump(model: BaseModel, names: frozenset[str] | None = None) -> dict[str, Any]:
    data = model.model_dump(mode="json", exclude_none=True)
    if names is None:
        return {k: v for k, v in data.items() if k not in _UUID_FIELDS}
    return {k: v for k, v in data.items() if k in names}


def _stamp(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


class ContributionBuilder:
    """Builds contributions for files below one watch root (the root fixes the acquisition keys)."""

    def __init__(self, watch_root: Path, *, skip_near_grid_bar_holes: bool = True) -> None:
        self.watch_root = Path(watch_root).absolute()
        self.skip_near_grid_bar_holes = skip_near_grid_bar_holes

    def acq_key(self, session_root: str | None) -> str | None:
        """Acquisition key of a session folder (``None`` when the file is outside any session layout)."""
        if session_root is None:
            return None
        return acquisition_key(Path(session_root).absolute(), self.watch_root)

    # ------------------------------------------------------------------ per kind

    def contributions_for(self, parsed: ParsedFile) -> list[Contribution]:
        """Contributions of one parsed file; the atlas is handled by :meth:`atlas_contributions`."""
        if isinstance(parsed, ParsedSession):
            return self._session(parsed)
        if isinstance(parsed, ParsedGridSquareMetadata):
            return self._gridsquare_dm(parsed)
        if isinstance(parsed, ParsedGridSquareImage):
            return self._gridsquare_image(parsed)
        if isinstance(parsed, ParsedFoilHoleImage):
            return self._foilhole_image(parsed)
        if isinstance(parsed, ParsedMicrograph):
            return self._micrograph(parsed.micrograph, EpuFileKind.MICROGRAPH, _dump(parsed.micrograph), True)
        if isinstance(parsed, ParsedFractions):
            return self._fractions(parsed)
        # Atlas images, tile images, samples and screening sessions add nothing the backend stores.
        return []

    def _session(self, parsed: ParsedSession) -> list[Contribution]:
        acq = self.acq_key(parsed.acquisition.session_root or parsed.epu_path.session_root)
        if acq is None:
            return []
        acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
        grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
        rank = SOURCE_RANK[EpuFileKind.SESSION]
        return [
            Contribution(
                EntityKind.ACQUISITION,
                acq_uuid,
                acq,
                acq,
                None,
                "session",
                rank,
                "",
                {**_dump(parsed.acquisition), "uuid": acq_uuid},
            ),
            Contribution(
                EntityKind.GRID,
                grid_uuid,
                acq,
                acq,
                acq_uuid,
                "session",
                rank,
                "",
                {**_dump(parsed.grid), "uuid": grid_uuid, "acquisition_uuid": acq_uuid},
            ),
        ]

    def _square(
        self,
        acq: str,
        square: GridSquareData,
        kind: EpuFileKind | None,
        fields: dict[str, Any],
        order: str = "",
    ) -> Contribution:
        """A grid-square contribution of file ``kind`` (``None``: synthesized from its children's paths)."""
        uuid = entity_uuid(acq, EntityKind.GRIDSQUARE, square.gridsquare_id)
        grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
        return Contribution(
            EntityKind.GRIDSQUARE,
            uuid,
            acq,
            square.gridsquare_id,
            grid_uuid,
            SYNTHESIZED_SOURCE if kind is None else kind.value,
            SYNTHESIZED_RANK if kind is None else SOURCE_RANK[kind],
            order,
            {**fields, "gridsquare_id": square.gridsquare_id, "uuid": uuid, "grid_uuid": grid_uuid},
        )

    def _hole(
        self,
        acq: str,
        hole: FoilHoleData,
        kind: EpuFileKind | None,
        fields: dict[str, Any],
        order: str = "",
    ) -> Contribution:
        """A foil-hole contribution of file ``kind`` (``None``: synthesized from its children's paths)."""
        uuid = entity_uuid(acq, EntityKind.FOILHOLE, hole.foilhole_id)
        square_uuid = entity_uuid(acq, EntityKind.GRIDSQUARE, str(hole.gridsquare_id))
        return Contribution(
            EntityKind.FOILHOLE,
            uuid,
            acq,
            hole.foilhole_id,
            square_uuid,
            SYNTHESIZED_SOURCE if kind is None else kind.value,
            SYNTHESIZED_RANK if kind is None else SOURCE_RANK[kind],
            order,
            {
                **fields,
                "foilhole_id": hole.foilhole_id,
                "gridsquare_id": hole.gridsquare_id,
                "uuid": uuid,
                "gridsquare_uuid": square_uuid,
            },
        )

    def _gridsquare_dm(self, parsed: ParsedGridSquareMetadata) -> list[Contribution]:
        acq = self.acq_key(parsed.gridsquare.session_root or parsed.epu_path.session_root)
        if acq is None:
            return []
        kind = EpuFileKind.GRIDSQUARE_METADATA
        out = [
            self._square(
                acq, parsed.gridsquare, kind, _dump(parsed.gridsquare, provided_fields(GridSquareData, kind))
            )
        ]
        names = provided_fields(FoilHoleData, kind)
        out.extend(self._hole(acq, hole, kind, _dump(hole, names)) for hole in parsed.foilholes)
        return out

    def _gridsquare_image(self, parsed: ParsedGridSquareImage) -> list[Contribution]:
        square = parsed.gridsquare
        acq = self.acq_key(parsed.epu_path.session_root)
        if square is None or acq is None:
            return []
        kind = EpuFileKind.GRIDSQUARE_IMAGE
        fields = _dump(square, provided_fields(GridSquareData, kind))
        # Several images of one square: the newest (file-name timestamp) is the one that counts.
        return [self._square(acq, square, kind, fields, _stamp(square.image_timestamp))]

    def _foilhole_image(self, parsed: ParsedFoilHoleImage) -> list[Contribution]:
        hole = parsed.foilhole
        acq = self.acq_key(hole.session_root or parsed.epu_path.session_root)
        if acq is None:
            return []
        kind = EpuFileKind.FOILHOLE_IMAGE
        fields = _dump(hole, provided_fields(FoilHoleData, kind))
        # Two images per hole (before and after re-centring): the newer file-name timestamp wins in any order.
        return [self._hole(acq, hole, kind, fields, _stamp(hole.image_timestamp))]

    def _micrograph(
        self, mic: MicrographData, kind: EpuFileKind, fields: dict[str, Any], primary: bool
    ) -> list[Contribution]:
        acq = self.acq_key(mic.session_root)
        if acq is None:
            return []
        uuid = entity_uuid(acq, EntityKind.MICROGRAPH, mic.micrograph_id)
        hole_uuid = entity_uuid(acq, EntityKind.FOILHOLE, mic.foilhole_id)
        fields = {
            **fields,
            "micrograph_id": mic.micrograph_id,
            "foilhole_id": mic.foilhole_id,
            "uuid": uuid,
            "foilhole_uuid": hole_uuid,
        }
        return [
            Contribution(
                EntityKind.MICROGRAPH,
                uuid,
                acq,
                mic.micrograph_id,
                hole_uuid,
                kind.value,
                SOURCE_RANK[kind],
                "",
                fields,
                primary=primary,
            )
        ]

    def _fractions(self, parsed: ParsedFractions) -> list[Contribution]:
        info = parsed.epu_path
        if info.foilhole_id is None:
            return []
        mic = MicrographData(
            micrograph_id=parsed.micrograph_id,
            foilhole_id=info.foilhole_id,
            gridsquare_id=info.gridsquare_id,
            session_root=info.session_root,
        )
        fields = {"fractions": parsed.fractions.model_dump(mode="json", exclude_none=True)}
        # Secondary: a fractions file alone does not make a micrograph.
        return self._micrograph(mic, EpuFileKind.FRACTIONS, fields, False)

    # ------------------------------------------------------------ synthesized parents

    def session_folder(self, acq: str) -> Path:
        """The session folder an acquisition key stands for (the inverse of :meth:`acq_key`)."""
        if acq == ".":
            return self.watch_root
        key = Path(acq)
        return key if key.is_absolute() else self.watch_root / key

    def synthesized_parent(
        self, child_kind: EntityKind, acq: str, child: dict[str, Any]
    ) -> Contribution | None:
        """A minimal parent for a child whose parent's own file has not appeared, from what the child's path says.

        A micrograph names its foil hole (``FoilHole_<id>_Data_...``) and lies in ``GridSquare_<id>/Data/``; a
        foil hole names its grid square; a grid square belongs to the session folder's grid, and the grid to its
        acquisition, both named after the folder when ``EpuSession.dm`` is missing. ``None`` when the child does
        not say enough (a micrograph outside a ``GridSquare_<id>`` folder) or has no parent of its own to build
        (atlases and tiles come from files that name their parents).
        """
        root = self.session_folder(acq)
        session_root = str(root)
        match child_kind:
            case EntityKind.MICROGRAPH:
                hole_id, square_id = child.get("foilhole_id"), child.get("gridsquare_id")
                if not hole_id or not square_id:
                    return None
                fields = {"session_root": child.get("session_root") or session_root}
                hole = FoilHoleData(foilhole_id=str(hole_id), gridsquare_id=str(square_id))
                return self._hole(acq, hole, None, fields)
            case EntityKind.FOILHOLE:
                square_id = child.get("gridsquare_id")
                if not square_id:
                    return None
                square = GridSquareData(gridsquare_id=str(square_id))
                return self._square(acq, square, None, {"session_root": session_root})
            case EntityKind.GRIDSQUARE:
                grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
                acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
                grid = GridData(
                    session_id=root.name, session_root=session_root, name=root.name, data_dir=session_root
                )
                fields = {**_dump(grid), "uuid": grid_uuid, "acquisition_uuid": acq_uuid}
                return Contribution(
                    EntityKind.GRID,
                    grid_uuid,
                    acq,
                    acq,
                    acq_uuid,
                    SYNTHESIZED_SOURCE,
                    SYNTHESIZED_RANK,
                    "",
                    fields,
                )
            case EntityKind.GRID:
                acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
                acquisition = AcquisitionData(session_id=root.name, session_root=session_root, name=root.name)
                fields = {**_dump(acquisition), "uuid": acq_uuid}
                return Contribution(
                    EntityKind.ACQUISITION,
                    acq_uuid,
                    acq,
                    acq,
                    None,
                    SYNTHESIZED_SOURCE,
                    SYNTHESIZED_RANK,
                    "",
                    fields,
                )
        return None

    @property
    def parent_builder(self) -> BuildParent:
        """:meth:`synthesized_parent` as the store's callable."""
        return self.synthesized_parent

    # ------------------------------------------------------------------ atlas

    def atlas_contributions(self, acq: str, parsed: ParsedAtlas) -> list[Contribution]:
        """The atlas (tiles embedded), its tile-to-square links and atlas-derived square fields, for one session."""
        atlas = parsed.atlas
        grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
        atlas_uuid = entity_uuid(acq, EntityKind.ATLAS, atlas.atlas_id)
        rank = SOURCE_RANK[EpuFileKind.ATLAS]
        tiles = [
            tile.model_copy(
                update={
                    "uuid": entity_uuid(acq, EntityKind.ATLAS_TILE, tile.tile_id),
                    "atlas_uuid": atlas_uuid,
                }
            )
            for tile in atlas.tiles
        ]
        data = atlas.model_copy(update={"uuid": atlas_uuid, "grid_uuid": grid_uuid, "tiles": tiles})
        out = [
            Contribution(
                EntityKind.ATLAS,
                atlas_uuid,
                acq,
                atlas.atlas_id,
                grid_uuid,
                "atlas",
                rank,
                "",
                data.model_dump(mode="json", exclude_none=True),
            )
        ]
        kind = EpuFileKind.ATLAS
        names = provided_fields(GridSquareData, kind)
        out.extend(self._square(acq, sq, kind, _dump(sq, names)) for sq in parsed.gridsquares)
        for tile in tiles:
            positions = [
                to_wire(
                    EntityConverter.tile_position_to_request(
                        pos.model_copy(
                            update={
                                "gridsquare_uuid": entity_uuid(acq, EntityKind.GRIDSQUARE, pos.gridsquare_id)
                            }
                        )
                    )
                )
                for pos in tile.gridsquare_positions
            ]
            if not positions:
                continue
            out.append(
                Contribution(
                    EntityKind.ATLAS_TILE,
                    str(tile.uuid),
                    acq,
                    tile.tile_id,
                    atlas_uuid,
                    "atlas",
                    rank,
                    "",
                    {"positions": positions},
                )
            )
        return out

    # ------------------------------------------------------------------ render

    def render(self, kind: EntityKind, merged: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Merged fields -> (wire payload, skip); see :data:`agent.ingest.store.Render`."""
        match kind:
            case EntityKind.ACQUISITION:
                return to_wire(
                    EntityConverter.acquisition_to_request(AcquisitionData.model_validate(merged))
                ), False
            case EntityKind.GRID:
                return to_wire(EntityConverter.grid_to_request(GridData.model_validate(merged))), False
            case EntityKind.ATLAS:
                return to_wire(EntityConverter.atlas_to_request(AtlasData.model_validate(merged))), False
            case EntityKind.GRIDSQUARE:
                square = GridSquareData.model_validate(merged)
                return to_wire(EntityConverter.gridsquare_to_request(square)), False
            case EntityKind.FOILHOLE:
                hole = FoilHoleData.model_validate(merged)
                skip = self.skip_near_grid_bar_holes and bool(hole.is_near_grid_bar)
                return to_wire(EntityConverter.foilhole_to_request(hole)), skip
            case EntityKind.MICROGRAPH:
                return to_wire(
                    EntityConverter.micrograph_to_request(MicrographData.model_validate(merged))
                ), False
            case EntityKind.ATLAS_TILE:
                return dict(merged), False
        raise AssertionError(kind)

    @property
    def renderer(self) -> Render:
        """:meth:`render` as the store's callable."""
        return self.render


__all__ = ["SOURCE_RANK", "ContributionBuilder", "norm_path"]
