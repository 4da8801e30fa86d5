"""From parse results to contributions, and from merged contributions to wire payloads.

:func:`contributions_for` turns one parsed file into :class:`~agent.ingest.store.Contribution` rows: per entity,
the fields its file kind *provides* plus the identity fields (natural ids and the deterministic uuids of the entity
and its parent). :func:`render` turns the merged fields of an entity back into its domain model and through
``EntityConverter`` into the request body the backend receives; it also decides whether the entity is kept off the
backend (near-grid-bar holes when configured, as SmartEM's client does). Ranks, provided fields, primary sources
and the request model of each kind come from the one table of :mod:`agent.ingest.kinds`; the atlas, which joins a
session only once both files are known, is :mod:`agent.ingest.atlas`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.ingest.identity import EntityKind, acquisition_key, entity_uuid
from agent.ingest.kinds import KINDS
from agent.ingest.records import SYNTHESIZED_RANK, SYNTHESIZED_SOURCE, BuildParent, Contribution, Render
from converters.merge import image_version
from converters.models import AcquisitionData, FoilHoleData, GridData, GridSquareData, MicrographData
from converters.parse import (
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

_UUID_FIELDS = frozenset(
    {"uuid", "grid_uuid", "acquisition_uuid", "gridsquare_uuid", "foilhole_uuid", "atlas_uuid"}
)


def dump(model: BaseModel, names: frozenset[str] | None = None) -> dict[str, Any]:
    """The fields of ``model`` that a source provides (``None``: every field but the uuids), JSON-ready."""
    data = model.model_dump(mode="json", exclude_none=True)
    if names is None:
        return {k: v for k, v in data.items() if k not in _UUID_FIELDS}
    return {k: v for k, v in data.items() if k in names}


def contribution(
    kind: EntityKind,
    uuid: str,
    acq: str,
    natural_id: str,
    parent_uuid: str | None,
    file_kind: EpuFileKind | None,
    fields: dict[str, Any],
    order: str = "",
) -> Contribution:
    """A contribution of file ``file_kind`` (``None``: synthesized from its children's paths) to one entity,
    with the rank and primary flag the kind's table gives that source."""
    if file_kind is None:
        return Contribution(
            kind, uuid, acq, natural_id, parent_uuid, SYNTHESIZED_SOURCE, SYNTHESIZED_RANK, order, fields
        )
    source = KINDS[kind].source(file_kind)
    return Contribution(
        kind,
        uuid,
        acq,
        natural_id,
        parent_uuid,
        file_kind.value,
        source.rank,
        order,
        fields,
        primary=source.primary,
    )


def provided(kind: EntityKind, file_kind: EpuFileKind, model: BaseModel) -> dict[str, Any]:
    """The fields of ``model`` that ``file_kind`` provides for entities of ``kind``."""
    return dump(model, KINDS[kind].source(file_kind).fields)


def square_contribution(
    acq: str, square: GridSquareData, file_kind: EpuFileKind | None, fields: dict[str, Any], order: str = ""
) -> Contribution:
    """A grid-square contribution of ``file_kind`` (``None``: synthesized from its children's paths)."""
    uuid = entity_uuid(acq, EntityKind.GRIDSQUARE, square.gridsquare_id)
    grid_uuid = entity_uuid(acq, EntityKind.GRID, acq)
    fields = {**fields, "gridsquare_id": square.gridsquare_id, "uuid": uuid, "grid_uuid": grid_uuid}
    return contribution(
        EntityKind.GRIDSQUARE, uuid, acq, square.gridsquare_id, grid_uuid, file_kind, fields, order
    )


def hole_contribution(
    acq: str, hole: FoilHoleData, file_kind: EpuFileKind | None, fields: dict[str, Any], order: str = ""
) -> Contribution:
    """A foil-hole contribution of ``file_kind`` (``None``: synthesized from its children's paths)."""
    uuid = entity_uuid(acq, EntityKind.FOILHOLE, hole.foilhole_id)
    square_uuid = entity_uuid(acq, EntityKind.GRIDSQUARE, str(hole.gridsquare_id))
    fields = {
        **fields,
        "foilhole_id": hole.foilhole_id,
        "gridsquare_id": hole.gridsquare_id,
        "uuid": uuid,
        "gridsquare_uuid": square_uuid,
    }
    return contribution(
        EntityKind.FOILHOLE, uuid, acq, hole.foilhole_id, square_uuid, file_kind, fields, order
    )


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
        """Contributions of one parsed file; the atlas is joined to its sessions by :mod:`agent.ingest.atlas`."""
        if isinstance(parsed, ParsedSession):
            return self._session(parsed)
        if isinstance(parsed, ParsedGridSquareMetadata):
            return self._gridsquare_dm(parsed)
        if isinstance(parsed, ParsedGridSquareImage):
            return self._gridsquare_image(parsed)
        if isinstance(parsed, ParsedFoilHoleImage):
            return self._foilhole_image(parsed)
        if isinstance(parsed, ParsedMicrograph):
            mic = parsed.micrograph
            fields = provided(EntityKind.MICROGRAPH, EpuFileKind.MICROGRAPH, mic)
            return self._micrograph(mic, EpuFileKind.MICROGRAPH, fields, True)
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
        kind = EpuFileKind.SESSION
        acq_fields = {**provided(EntityKind.ACQUISITION, kind, parsed.acquisition), "uuid": acq_uuid}
        grid_fields = {
            **provided(EntityKind.GRID, kind, parsed.grid),
            "uuid": grid_uuid,
            "acquisition_uuid": acq_uuid,
        }
        return [
            contribution(EntityKind.ACQUISITION, acq_uuid, acq, acq, None, kind, acq_fields),
            contribution(EntityKind.GRID, grid_uuid, acq, acq, acq_uuid, kind, grid_fields),
        ]

    def _square(
        self,
        acq: str,
        square: GridSquareData,
        kind: EpuFileKind | None,
        fields: dict[str, Any],
        order: str = "",
    ) -> Contribution:
        """:func:`square_contribution`."""
        return square_contribution(acq, square, kind, fields, order)

    def _hole(
        self,
        acq: str,
        hole: FoilHoleData,
        kind: EpuFileKind | None,
        fields: dict[str, Any],
        order: str = "",
    ) -> Contribution:
        """:func:`hole_contribution`."""
        return hole_contribution(acq, hole, kind, fields, order)

    def _gridsquare_dm(self, parsed: ParsedGridSquareMetadata) -> list[Contribution]:
        acq = self.acq_key(parsed.gridsquare.session_root or parsed.epu_path.session_root)
        if acq is None:
            return []
        kind = EpuFileKind.GRIDSQUARE_METADATA
        out = [
            self._square(
                acq, parsed.gridsquare, kind, provided(EntityKind.GRIDSQUARE, kind, parsed.gridsquare)
            )
        ]
        out.extend(
            self._hole(acq, hole, kind, provided(EntityKind.FOILHOLE, kind, hole))
            for hole in parsed.foilholes
        )
        return out

    def _gridsquare_image(self, parsed: ParsedGridSquareImage) -> list[Contribution]:
        square = parsed.gridsquare
        acq = self.acq_key(parsed.epu_path.session_root)
        if square is None or acq is None:
            return []
        kind = EpuFileKind.GRIDSQUARE_IMAGE
        fields = provided(EntityKind.GRIDSQUARE, kind, square)
        return [self._square(acq, square, kind, fields, image_version(square.image_timestamp))]

    def _foilhole_image(self, parsed: ParsedFoilHoleImage) -> list[Contribution]:
        hole = parsed.foilhole
        acq = self.acq_key(hole.session_root or parsed.epu_path.session_root)
        if acq is None:
            return []
        kind = EpuFileKind.FOILHOLE_IMAGE
        fields = provided(EntityKind.FOILHOLE, kind, hole)
        return [self._hole(acq, hole, kind, fields, image_version(hole.image_timestamp))]

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
        rank = KINDS[EntityKind.MICROGRAPH].source(kind).rank
        return [
            Contribution(
                EntityKind.MICROGRAPH,
                uuid,
                acq,
                mic.micrograph_id,
                hole_uuid,
                kind.value,
                rank,
                "",
                fields,
                primary,
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
        kind = EpuFileKind.FRACTIONS
        fields = {"fractions": parsed.fractions.model_dump(mode="json", exclude_none=True)}
        return self._micrograph(mic, kind, fields, KINDS[EntityKind.MICROGRAPH].source(kind).primary)

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
                fields = {**dump(grid), "uuid": grid_uuid, "acquisition_uuid": acq_uuid}
                return contribution(EntityKind.GRID, grid_uuid, acq, acq, acq_uuid, None, fields)
            case EntityKind.GRID:
                acq_uuid = entity_uuid(acq, EntityKind.ACQUISITION, acq)
                acquisition = AcquisitionData(session_id=root.name, session_root=session_root, name=root.name)
                fields = {**dump(acquisition), "uuid": acq_uuid}
                return contribution(EntityKind.ACQUISITION, acq_uuid, acq, acq, None, None, fields)
        return None

    @property
    def parent_builder(self) -> BuildParent:
        """:meth:`synthesized_parent` as the store's callable."""
        return self.synthesized_parent

    # ------------------------------------------------------------------ render

    def render(self, kind: EntityKind, merged: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Merged fields -> (wire payload, skip); see :data:`agent.ingest.records.Render`."""
        spec = KINDS[kind]
        request = spec.to_request(merged)
        skip = (
            self.skip_near_grid_bar_holes and spec.near_grid_bar is not None and spec.near_grid_bar(request)
        )
        return to_wire(request), skip

    @property
    def renderer(self) -> Render:
        """:meth:`render` as the store's callable."""
        return self.render


__all__ = [
    "ContributionBuilder",
    "contribution",
    "dump",
    "hole_contribution",
    "provided",
    "square_contribution",
]
