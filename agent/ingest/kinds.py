"""One table per entity kind: what the ingest pipeline knows about each kind of backend entity, in one place.

For each :class:`~agent.ingest.identity.EntityKind`, :data:`KINDS` holds its :class:`KindSpec`: the files that
contribute to it (:class:`Source`: merge rank, the fields each provides, whether it makes the entity real,
whether a newer version of the file replaces an older one), how its merged fields become the request model
(domain model + ``EntityConverter``), the request specs that create, update and batch-create it, its send order
and its parent's kind. The contribution builder and the renderer (:mod:`agent.ingest.entities`), the store's
outbox priority (:mod:`agent.ingest.store`) and the flusher (:mod:`agent.ingest.flusher`) read this table and
nothing else about kinds.

Which fields a file kind provides per domain model is declared once in ``converters.merge.PROVIDED_FIELDS``
(``converters`` merges partial models with it and may not import the agent); the sources below refer to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from agent.ingest.identity import EntityKind
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
from converters.paths import EpuFileKind
from converters.requests import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographCreateRequest,
)

if TYPE_CHECKING:
    from backend_client.operations import RequestSpec

R = TypeVar("R", bound=BaseModel)

SpecBuilder = Callable[[R, str, "str | None"], "RequestSpec[Any]"]
"""(request, entity uuid, parent uuid) -> the request spec that sends it."""

BatchBuilder = Callable[["str | None", Sequence[R]], "RequestSpec[Any]"]
"""(parent uuid, requests) -> the request spec of one batch create."""


class TileLinks(BaseModel):
    """The request of an atlas tile: its grid-square positions, linked in one request per tile."""

    model_config = ConfigDict(extra="forbid")

    positions: list[GridSquarePositionRequest]


@dataclass(frozen=True, slots=True)
class Source:
    """One file kind that contributes fields to an entity kind.

    Attributes:
        file_kind: the contributing file kind; its value is the contribution's ``source`` name.
        rank: merge rank; a higher rank's fields override a lower one's. Stored with every contribution in the
            state database, so a value never changes once released.
        fields: the domain-model fields this file kind provides (``converters.merge.PROVIDED_FIELDS``);
            ``None``: every field the file yields (the file describes the whole entity).
        primary: whether this file makes the entity real; an entity known only from secondary files (a
            ``_Fractions.xml`` without its micrograph XML) is kept but never sent.
        versioned: several files of this kind describe one entity (two foil-hole images, before and after
            re-centring) and the newest wins whatever the arrival order (``converters.merge.image_version``).
    """

    file_kind: EpuFileKind
    rank: int
    fields: frozenset[str] | None = None
    primary: bool = True
    versioned: bool = False


@dataclass(frozen=True, slots=True)
class Batch(Generic[R]):
    """How the creates of one kind go out in batch requests.

    Attributes:
        build: the batch request spec of a chunk of creates.
        per_parent: one request per parent (the endpoint is under the parent's path); else all parents mixed.
        min_size: fewer creates than this in a round go out one by one.
        optional: the endpoint is a testbed extension; a 404 that is not about the parent means the backend
            lacks it (SmartEM), and the flusher sends single creates from then on.
    """

    build: BatchBuilder[R]
    per_parent: bool
    min_size: int = 1
    optional: bool = False


@dataclass(frozen=True, slots=True)
class KindSpec(Generic[R]):
    """Everything the pipeline knows about one entity kind.

    Attributes:
        kind: the entity kind.
        send_order: outbox priority; every parent's kind before its children's.
        parent: the parent's kind (``None`` for the acquisition).
        request_model: the request model its payload validates as.
        to_request: merged contribution fields -> request model (domain model + ``EntityConverter``).
        create: the create request spec of one entity.
        update: the update request spec, or ``None`` when the backend has no update for the kind (the atlas is
            created once with its tiles).
        batch: how creates are batched, or ``None`` for one request each.
        sources: the file kinds that contribute to the kind.
        near_grid_bar: whether an entity lies near the grid bar (kept off the backend when configured, as
            SmartEM's client does); ``None`` for kinds that cannot.
        repeat_is_done: a create or update the backend answers with a conflict or a 500 is already in place
            (tile links are one-shot on SmartEM: a repeat is an integrity error).
    """

    kind: EntityKind
    send_order: int
    parent: EntityKind | None
    request_model: type[R]
    to_request: Callable[[dict[str, Any]], R]
    create: SpecBuilder[R]
    update: SpecBuilder[R] | None
    sources: tuple[Source, ...]
    batch: Batch[R] | None = None
    near_grid_bar: Callable[[R], bool] | None = None
    repeat_is_done: bool = False
    _by_file: dict[EpuFileKind, Source] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_file", {s.file_kind: s for s in self.sources})

    def request(self, payload: dict[str, Any]) -> R:
        """A stored wire payload as the kind's request model."""
        return self.request_model.model_validate(payload)

    def source(self, file_kind: EpuFileKind) -> Source:
        """The source entry of ``file_kind`` (``KeyError`` when that file kind says nothing about the kind)."""
        return self._by_file[file_kind]


# The request-spec builders import backend_client on first use: a parser process reads this table (for the
# sources) and must not load the HTTP client, which it never uses (about 15 MB and 0.1 s per process).


def _create_acquisition(req: AcquisitionCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_acquisition(req)


def _update_acquisition(req: AcquisitionCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.update_acquisition(req)


def _create_grid(req: GridCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_grid(req)


def _update_grid(req: GridCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.update_grid(req)


def _create_atlas(req: AtlasCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_atlas(req)


def _link_tile(req: TileLinks, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.link_tile_gridsquares(uuid, req.positions)


def _create_gridsquare(req: GridSquareCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_gridsquare(req)


def _create_gridsquares(grid_uuid: str | None, reqs: Sequence[GridSquareCreateRequest]) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_gridsquares_batch(str(grid_uuid), reqs)


def _update_gridsquare(req: GridSquareCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.update_gridsquare(req)


def _create_foilhole(req: FoilHoleCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    # SmartEM creates foil holes only through the list endpoint: a single hole is a list of one.
    return _create_foilholes(parent, [req])


def _create_foilholes(square_uuid: str | None, reqs: Sequence[FoilHoleCreateRequest]) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_foilholes(str(square_uuid), reqs)


def _update_foilhole(req: FoilHoleCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.update_foilhole(req)


def _create_micrograph(req: MicrographCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_micrograph(req)


def _create_micrographs(parent: str | None, reqs: Sequence[MicrographCreateRequest]) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.create_micrographs_batch(reqs)


def _update_micrograph(req: MicrographCreateRequest, uuid: str, parent: str | None) -> RequestSpec[Any]:
    from backend_client import operations as ops

    return ops.update_micrograph(req)


def _gridsquare_sources() -> tuple[Source, ...]:
    return tuple(
        Source(kind, rank, provided_fields(GridSquareData, kind), versioned=versioned)
        for kind, rank, versioned in (
            (EpuFileKind.ATLAS, 1, False),
            (EpuFileKind.GRIDSQUARE_METADATA, 2, False),
            # Several images of one square: the newest (file-name timestamp) is the one that counts.
            (EpuFileKind.GRIDSQUARE_IMAGE, 3, True),
        )
    )


def _foilhole_sources() -> tuple[Source, ...]:
    return (
        Source(
            EpuFileKind.GRIDSQUARE_METADATA, 2, provided_fields(FoilHoleData, EpuFileKind.GRIDSQUARE_METADATA)
        ),
        # Two images per hole (before and after re-centring): the newer file-name timestamp wins in any order.
        Source(
            EpuFileKind.FOILHOLE_IMAGE,
            4,
            provided_fields(FoilHoleData, EpuFileKind.FOILHOLE_IMAGE),
            versioned=True,
        ),
    )


# Ranks are per entity (they order the sources of one entity), but each file kind keeps one value across kinds:
# session 0, atlas 1, grid-square .dm 2, grid-square image 3, foil-hole image 4, micrograph 5, fractions 6.
# Send order: every parent before its children; tile links after the grid squares they reference.
_SPECS: tuple[KindSpec[Any], ...] = (
    KindSpec(
        kind=EntityKind.ACQUISITION,
        send_order=0,
        parent=None,
        request_model=AcquisitionCreateRequest,
        to_request=lambda m: EntityConverter.acquisition_to_request(AcquisitionData.model_validate(m)),
        create=_create_acquisition,
        update=_update_acquisition,
        sources=(Source(EpuFileKind.SESSION, 0),),
    ),
    KindSpec(
        kind=EntityKind.GRID,
        send_order=1,
        parent=EntityKind.ACQUISITION,
        request_model=GridCreateRequest,
        to_request=lambda m: EntityConverter.grid_to_request(GridData.model_validate(m)),
        create=_create_grid,
        update=_update_grid,
        sources=(Source(EpuFileKind.SESSION, 0),),
    ),
    KindSpec(
        kind=EntityKind.GRIDSQUARE,
        send_order=2,
        parent=EntityKind.GRID,
        request_model=GridSquareCreateRequest,
        to_request=lambda m: EntityConverter.gridsquare_to_request(GridSquareData.model_validate(m)),
        create=_create_gridsquare,
        update=_update_gridsquare,
        sources=_gridsquare_sources(),
        batch=Batch(_create_gridsquares, per_parent=True),
    ),
    KindSpec(
        kind=EntityKind.ATLAS,
        send_order=3,
        parent=EntityKind.GRID,
        request_model=AtlasCreateRequest,
        to_request=lambda m: EntityConverter.atlas_to_request(AtlasData.model_validate(m)),
        create=_create_atlas,
        update=None,
        sources=(Source(EpuFileKind.ATLAS, 1),),
    ),
    KindSpec(
        kind=EntityKind.ATLAS_TILE,
        send_order=4,
        parent=EntityKind.ATLAS,
        request_model=TileLinks,
        to_request=TileLinks.model_validate,
        create=_link_tile,
        update=_link_tile,  # the testbed updates links in place
        sources=(Source(EpuFileKind.ATLAS, 1),),
        repeat_is_done=True,
    ),
    KindSpec(
        kind=EntityKind.FOILHOLE,
        send_order=5,
        parent=EntityKind.GRIDSQUARE,
        request_model=FoilHoleCreateRequest,
        to_request=lambda m: EntityConverter.foilhole_to_request(FoilHoleData.model_validate(m)),
        create=_create_foilhole,
        update=_update_foilhole,
        sources=_foilhole_sources(),
        batch=Batch(_create_foilholes, per_parent=True),
        near_grid_bar=lambda req: bool(req.is_near_grid_bar),
    ),
    KindSpec(
        kind=EntityKind.MICROGRAPH,
        send_order=6,
        parent=EntityKind.FOILHOLE,
        request_model=MicrographCreateRequest,
        to_request=lambda m: EntityConverter.micrograph_to_request(MicrographData.model_validate(m)),
        create=_create_micrograph,
        update=_update_micrograph,
        sources=(
            Source(EpuFileKind.MICROGRAPH, 5),
            # Secondary: a fractions file alone does not make a micrograph.
            Source(
                EpuFileKind.FRACTIONS,
                6,
                provided_fields(MicrographData, EpuFileKind.FRACTIONS),
                primary=False,
            ),
        ),
        batch=Batch(_create_micrographs, per_parent=False, min_size=2, optional=True),
    ),
)

KINDS: dict[EntityKind, KindSpec[Any]] = {spec.kind: spec for spec in _SPECS}
"""Entity kind -> its :class:`KindSpec`."""

assert set(KINDS) == set(EntityKind), "every entity kind needs its table entry"


__all__ = ["KINDS", "Batch", "BatchBuilder", "KindSpec", "Source", "SpecBuilder", "TileLinks"]
