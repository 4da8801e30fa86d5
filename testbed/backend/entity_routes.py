"""SmartEM's entity endpoints (smartem-reference.md table 2.2 and section 2.3) plus the GETs of the seed
client.

Rules common to both modes: the path names the parent of a single create (SmartEM takes it from the path too);
updates merge only the fields the client sent and never move or rename an entity; status values must be in
SmartEM's vocabularies (422).

``strict``: a missing parent is 404; a duplicate create is 409; a body that contradicts what SmartEM would act on
is 422 (the parent named in a foil-hole or grid-square batch, where SmartEM takes the body's over the path's,
and the uuid or parent in a PUT body, which SmartEM would apply); a position without ``gridsquare_uuid`` and an
acquisition without ``name`` are 422; a PUT needs the create shape.

``smartem`` (as measured against the real backend, ``tests/smartem/test_differential.py``): a missing parent is
the foreign-key violation SmartEM does not handle (500 ``text/plain``), except the grid-square batch, which checks
its grid (404) and answers its own integrity errors with 409; a duplicate create is 500 likewise; foil holes
and batch grid squares are filed under the parent their body names; a PUT may carry any subset of fields, and
an explicit ``null`` for a column SmartEM declares ``NOT NULL`` is a 500; ``/grids/{uuid}/registered`` does not
look the grid up; an atlas is stored before its tiles, so a failing tile leaves the atlas behind.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from converters.requests import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareBatchCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographBatchCreateRequest,
    MicrographCreateRequest,
)
from testbed.backend.bodies import parse_many, parse_one, parse_update
from testbed.backend.entity_store import PARENT_KIND, NewEntity
from testbed.backend.errors import Conflict, DuplicateEntity, NotFound, ServerCrash
from testbed.backend.routing import Router
from testbed.backend.shapes import project
from testbed.backend.state import BackendState, in_thread

# Parent-link fields an update must not change (the entity stays where it was created).
_PARENT_FIELDS = frozenset(
    {"uuid", "acquisition_uuid", "grid_uuid", "atlas_uuid", "gridsquare_uuid", "foilhole_uuid"}
)

# The field of each kind's body that names its parent.
_PARENT_FIELD = {
    "grid": "acquisition_uuid",
    "atlas": "grid_uuid",
    "atlas_tile": "atlas_uuid",
    "gridsquare": "grid_uuid",
    "foilhole": "gridsquare_uuid",
    "micrograph": "foilhole_uuid",
}

# Body fields SmartEM stores in NOT NULL columns: an explicit null in a PUT is an integrity error there (500).
# The required fields of each create model, plus the acquisition's name (optional in the model, NOT NULL in the
# table, filled with "Unknown" on create).
_NOT_NULL = {
    "acquisition": frozenset({"uuid", "name"}),
    "grid": frozenset({"uuid", "name", "acquisition_uuid"}),
    "gridsquare": frozenset({"uuid", "gridsquare_id", "grid_uuid"}),
    "foilhole": frozenset({"uuid", "foilhole_id", "gridsquare_id", "gridsquare_uuid"}),
    "micrograph": frozenset({"uuid", "foilhole_id"}),
}

_PATH_OF_KIND = {
    "acquisition": "acquisitions",
    "grid": "grids",
    "atlas": "atlases",
    "atlas_tile": "atlas-tiles",
    "gridsquare": "gridsquares",
    "foilhole": "foilholes",
    "micrograph": "micrographs",
}


def _duplicate_uuids(uuids: list[str]) -> list[str]:
    seen: set[str] = set()
    dups = []
    for u in uuids:
        if u in seen:
            dups.append(u)
        seen.add(u)
    return dups


def _unprocessable(msg: str, *loc: str | int) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ["body", *loc], "msg": msg, "input": None}])


def _contradiction(field: str, sent: str, path_value: str, *loc: str | int) -> RequestValidationError:
    return _unprocessable(
        f"{field} {sent!r} contradicts {path_value!r} from the path (SmartEM would act on the body's value)",
        *loc,
        field,
    )


def build_entity_router(state: BackendState) -> APIRouter:
    """All entity routes bound to ``state``."""
    router = Router(tags=["entities"])
    compat = state.options.compat

    def shape(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
        """A stored entity as reads and updates answer it."""
        body = project(kind, stored["data"], compat)
        if not state.strict and kind == "micrograph" and body["micrograph_id"] is None:
            # The column default SmartEM reads back: its create body has no micrograph_id.
            body["micrograph_id"] = ""
        return body

    def answered_status(body: dict[str, Any]) -> dict[str, Any]:
        if not state.strict and body.get("status") is None:
            body["status"] = "none"
        return body

    async def create(
        entities: list[NewEntity], *, smartem_conflict_is_409: bool = False
    ) -> list[dict[str, Any]]:
        try:
            return await in_thread(state.entities.create, entities)
        except DuplicateEntity as exc:
            if state.strict:
                raise
            if smartem_conflict_is_409:
                # The grid-square batch is the one SmartEM route that catches its IntegrityError.
                raise Conflict("gridsquare batch conflicts with existing data") from exc
            raise ServerCrash(f"IntegrityError: {exc.detail}") from exc
        except NotFound as exc:
            if state.strict:
                raise
            # SmartEM inserts without looking the parent up: the foreign key refuses the row.
            if smartem_conflict_is_409:
                raise Conflict("gridsquare batch conflicts with existing data") from exc
            raise ServerCrash(f"IntegrityError: foreign key: {exc.detail}") from exc

    async def update(kind: str, uuid: str, model_cls: Any, request: Request) -> dict[str, Any]:
        body = parse_update(await request.body(), model_cls, compat)
        sent = body.model_fields_set
        stored = await get_one(kind, uuid)
        parent_field = _PARENT_FIELD.get(kind)
        new_parent = (
            getattr(body, parent_field) if parent_field is not None and parent_field in sent else None
        )
        body_uuid = body.uuid if "uuid" in sent else None
        if state.strict:
            # SmartEM applies these body fields (renaming or moving the row): a client must not rely on the
            # path winning.
            if body_uuid is not None and body_uuid != uuid:
                raise _contradiction("uuid", body_uuid, uuid)
            if parent_field and new_parent is not None and new_parent != stored["parent_uuid"]:
                raise _contradiction(parent_field, new_parent, stored["parent_uuid"])
        else:
            nulls = sorted(f for f in sent & _NOT_NULL.get(kind, frozenset()) if getattr(body, f) is None)
            if nulls:
                raise ServerCrash(f"IntegrityError: null value in NOT NULL column(s) {', '.join(nulls)}")
            parent_kind = PARENT_KIND[kind]
            if parent_kind is not None and new_parent is not None and new_parent != stored["parent_uuid"]:
                # SmartEM would move the row; a parent that does not exist fails its foreign key.
                known = await in_thread(state.entities.get, parent_kind, new_parent)
                if known is None:
                    raise ServerCrash(f"IntegrityError: foreign key: {parent_kind} {new_parent} not found")
        fields = body.model_dump(mode="json", include=sent - _PARENT_FIELDS)
        updated = await in_thread(state.entities.update, kind, uuid, fields)
        if kind == "foilhole":
            return answered_status(shape(kind, updated))  # SmartEM's hole update answers "none" for null
        return shape(kind, updated)

    async def get_one(kind: str, uuid: str) -> dict[str, Any]:
        stored = await in_thread(state.entities.get, kind, uuid)
        if stored is None:
            raise NotFound(f"{kind} {uuid} not found")
        return stored

    async def list_children(kind: str, parent_kind: str, parent_uuid: str) -> list[dict[str, Any]]:
        await get_one(parent_kind, parent_uuid)
        return [shape(kind, e) for e in await in_thread(state.entities.children, kind, parent_uuid)]

    async def atlas_body(stored: dict[str, Any]) -> dict[str, Any]:
        body = shape("atlas", stored)
        if state.strict:
            tiles = await in_thread(state.entities.children, "atlas_tile", stored["uuid"])
            body["tiles"] = [shape("atlas_tile", t) for t in tiles]
        else:
            body["tiles"] = []  # SmartEM's atlas responses never load the tiles
        return body

    # -- acquisitions ----------------------------------------------------------------------------------------

    @router.post("/acquisitions", status_code=201)
    async def create_acquisition(request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), AcquisitionCreateRequest, compat)
        data = body.model_dump(mode="json")
        nameless = data["name"] is None
        if nameless and state.strict:
            # SmartEM commits a nameless acquisition and then fails (500); strict refuses it up front.
            raise RequestValidationError(
                [{"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": None}]
            )
        if not state.strict:
            data["status"] = "started"  # SmartEM starts every acquisition it creates, whatever was sent
        if nameless and not state.strict:
            # SmartEM commits the row with name "Unknown", then its response model rejects it: a 500 after
            # the fact, and a retry with a name then hits the duplicate.
            data["name"] = "Unknown"
        await create([NewEntity("acquisition", body.uuid, None, data)])
        if nameless and not state.strict:
            raise ServerCrash("response validation: AcquisitionResponse.name is None")
        return project("acquisition", data, compat)

    @router.get("/acquisitions")
    async def list_acquisitions() -> list[dict[str, Any]]:
        return [shape("acquisition", e) for e in await in_thread(state.entities.all_of_kind, "acquisition")]

    @router.get("/acquisitions/{acquisition_uuid}")
    async def get_acquisition(acquisition_uuid: str) -> dict[str, Any]:
        return shape("acquisition", await get_one("acquisition", acquisition_uuid))

    @router.put("/acquisitions/{acquisition_uuid}")
    async def update_acquisition(acquisition_uuid: str, request: Request) -> dict[str, Any]:
        return await update("acquisition", acquisition_uuid, AcquisitionCreateRequest, request)

    # -- grids -----------------------------------------------------------------------------------------------

    @router.post("/acquisitions/{acquisition_uuid}/grids", status_code=201)
    async def create_grid(acquisition_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), GridCreateRequest, compat)
        data = {**body.model_dump(mode="json"), "acquisition_uuid": acquisition_uuid}
        if not state.strict:
            data["status"] = "none"  # SmartEM's grid create stores "none", whatever was sent
        await create([NewEntity("grid", body.uuid, acquisition_uuid, data)])
        return project("grid", data, compat)

    @router.get("/acquisitions/{acquisition_uuid}/grids")
    async def get_acquisition_grids(acquisition_uuid: str) -> list[dict[str, Any]]:
        return await list_children("grid", "acquisition", acquisition_uuid)

    @router.get("/grids/{grid_uuid}")
    async def get_grid(grid_uuid: str) -> dict[str, Any]:
        return shape("grid", await get_one("grid", grid_uuid))

    @router.put("/grids/{grid_uuid}")
    async def update_grid(grid_uuid: str, request: Request) -> dict[str, Any]:
        return await update("grid", grid_uuid, GridCreateRequest, request)

    @router.post("/grids/{grid_uuid}/registered")
    async def grid_registered(grid_uuid: str) -> bool:
        try:
            await in_thread(state.entities.mark_registered, "grid", grid_uuid)
        except NotFound:
            if state.strict:
                raise
            # SmartEM only publishes `grid.registered`; it never looks the grid up.
        return True

    # -- atlas and tiles -------------------------------------------------------------------------------------

    @router.post("/grids/{grid_uuid}/atlas", status_code=201)
    async def create_atlas(grid_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), AtlasCreateRequest, compat)
        data = {**body.model_dump(mode="json", exclude={"tiles"}), "grid_uuid": grid_uuid}
        tiles = [{**t.model_dump(mode="json"), "atlas_uuid": body.uuid} for t in body.tiles or []]
        atlas = NewEntity("atlas", body.uuid, grid_uuid, data)
        tile_rows = [NewEntity("atlas_tile", t["uuid"], body.uuid, t) for t in tiles]
        if state.strict:
            await create([atlas, *tile_rows])  # one transaction
        else:
            # SmartEM commits the atlas, then each tile on its own: a failing tile leaves the rest behind.
            for row in (atlas, *tile_rows):
                await create([row])
        shown = [project("atlas_tile", t, compat) for t in tiles] if state.strict else []
        return {**project("atlas", data, compat), "tiles": shown}

    @router.get("/grids/{grid_uuid}/atlas")
    async def get_grid_atlas(grid_uuid: str) -> dict[str, Any]:
        await get_one("grid", grid_uuid)
        atlases = await in_thread(state.entities.children, "atlas", grid_uuid)
        if not atlases:
            raise NotFound(f"grid {grid_uuid} has no atlas")
        return await atlas_body(atlases[-1])

    @router.get("/atlases/{atlas_uuid}")
    async def get_atlas(atlas_uuid: str) -> dict[str, Any]:
        return await atlas_body(await get_one("atlas", atlas_uuid))

    @router.get("/atlases/{atlas_uuid}/tiles")
    async def get_atlas_tiles(atlas_uuid: str) -> list[dict[str, Any]]:
        return await list_children("atlas_tile", "atlas", atlas_uuid)

    @router.get("/atlas-tiles/{tile_uuid}")
    async def get_atlas_tile(tile_uuid: str) -> dict[str, Any]:
        return shape("atlas_tile", await get_one("atlas_tile", tile_uuid))

    @router.post("/atlas-tiles/{tile_uuid}/gridsquares", status_code=201)
    async def link_tile_gridsquares(tile_uuid: str, request: Request) -> list[dict[str, Any]]:
        positions = parse_many(await request.body(), GridSquarePositionRequest, compat)
        rows = [p.model_dump(mode="json") for p in positions]
        unplaced = [i for i, p in enumerate(positions) if p.gridsquare_uuid is None]
        if unplaced:
            # SmartEM's link table has gridsquare_uuid NOT NULL.
            if state.strict:
                raise _unprocessable("gridsquare_uuid is required", unplaced[0], "gridsquare_uuid")
            raise ServerCrash("IntegrityError: null gridsquare_uuid in atlastilegridsquareposition")
        try:
            return await in_thread(
                state.entities.link_positions, tile_uuid, rows, duplicates_conflict=not state.strict
            )
        except (DuplicateEntity, NotFound) as exc:
            if state.strict:
                raise
            # Duplicates and unknown tiles or squares alike: SmartEM's unhandled integrity error.
            raise ServerCrash(f"IntegrityError: {exc.detail}") from exc

    @router.get("/atlas-tiles/{tile_uuid}/gridsquares")
    async def get_tile_positions(tile_uuid: str) -> list[dict[str, Any]]:
        await get_one("atlas_tile", tile_uuid)
        return await in_thread(state.entities.tile_positions, tile_uuid)

    # -- grid squares ----------------------------------------------------------------------------------------

    @router.post("/grids/{grid_uuid}/gridsquares", status_code=201)
    async def create_gridsquare(grid_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), GridSquareCreateRequest, compat)
        data = {**body.model_dump(mode="json"), "grid_uuid": grid_uuid}
        if not state.strict:
            data["status"] = "none"  # as SmartEM's single create stores it, whatever was sent
        await create([NewEntity("gridsquare", body.uuid, grid_uuid, data)])
        return project("gridsquare", data, compat)

    @router.post("/grids/{grid_uuid}/gridsquares/batch", status_code=201)
    async def create_gridsquares_batch(grid_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), GridSquareBatchCreateRequest, compat)
        dups = _duplicate_uuids([g.uuid for g in body.gridsquares])
        if dups:
            raise _unprocessable(f"duplicate gridsquare uuids in batch: {', '.join(dups[:10])}")
        if state.strict:
            for i, g in enumerate(body.gridsquares):
                if g.grid_uuid != grid_uuid:
                    raise _contradiction("grid_uuid", g.grid_uuid, grid_uuid, "gridsquares", i)
        else:
            # SmartEM checks the path's grid, then stores each square under the grid its body names.
            await get_one("grid", grid_uuid)
        rows = [g.model_dump(mode="json") for g in body.gridsquares]
        await create(
            [NewEntity("gridsquare", r["uuid"], r["grid_uuid"], r) for r in rows],
            smartem_conflict_is_409=True,
        )
        # SmartEM stores the status as sent (null included) but answers "none" for a null one.
        return {"gridsquares": [answered_status(project("gridsquare", r, compat)) for r in rows]}

    @router.get("/grids/{grid_uuid}/gridsquares")
    async def get_grid_gridsquares(grid_uuid: str) -> list[dict[str, Any]]:
        return await list_children("gridsquare", "grid", grid_uuid)

    @router.get("/gridsquares/{gridsquare_uuid}")
    async def get_gridsquare(gridsquare_uuid: str) -> dict[str, Any]:
        return shape("gridsquare", await get_one("gridsquare", gridsquare_uuid))

    @router.put("/gridsquares/{gridsquare_uuid}")
    async def update_gridsquare(gridsquare_uuid: str, request: Request) -> dict[str, Any]:
        return await update("gridsquare", gridsquare_uuid, GridSquareCreateRequest, request)

    @router.post("/gridsquares/{gridsquare_uuid}/registered")
    async def gridsquare_registered(gridsquare_uuid: str, count: int | None = None) -> bool:
        await in_thread(state.entities.mark_registered, "gridsquare", gridsquare_uuid, count)
        return True

    # -- foil holes ------------------------------------------------------------------------------------------

    @router.post("/gridsquares/{gridsquare_uuid}/foilholes", status_code=201)
    async def create_foilholes(gridsquare_uuid: str, request: Request) -> list[dict[str, Any]]:
        holes = parse_many(await request.body(), FoilHoleCreateRequest, compat)
        # SmartEM files each hole under the gridsquare_uuid of its body, whatever the path says.
        rows = [h.model_dump(mode="json") for h in holes]
        if state.strict:
            dups = _duplicate_uuids([r["uuid"] for r in rows])
            if dups:
                raise _unprocessable(f"duplicate foilhole uuids in batch: {', '.join(dups[:10])}")
            for i, r in enumerate(rows):
                if r["gridsquare_uuid"] != gridsquare_uuid:
                    raise _contradiction("gridsquare_uuid", r["gridsquare_uuid"], gridsquare_uuid, i)
        if not rows:
            if state.strict:
                await get_one("gridsquare", gridsquare_uuid)
            return []  # SmartEM commits nothing and looks nothing up
        await create([NewEntity("foilhole", r["uuid"], r["gridsquare_uuid"], r) for r in rows])
        # SmartEM stores the status as sent (null included) but answers "none" for a null one.
        return [answered_status(project("foilhole", r, compat)) for r in rows]

    @router.get("/gridsquares/{gridsquare_uuid}/foilholes")
    async def get_gridsquare_foilholes(gridsquare_uuid: str) -> list[dict[str, Any]]:
        return await list_children("foilhole", "gridsquare", gridsquare_uuid)

    @router.get("/foilholes/{foilhole_uuid}")
    async def get_foilhole(foilhole_uuid: str) -> dict[str, Any]:
        return shape("foilhole", await get_one("foilhole", foilhole_uuid))

    @router.put("/foilholes/{foilhole_uuid}")
    async def update_foilhole(foilhole_uuid: str, request: Request) -> dict[str, Any]:
        return await update("foilhole", foilhole_uuid, FoilHoleCreateRequest, request)

    # -- micrographs -----------------------------------------------------------------------------------------

    @router.post("/foilholes/{foilhole_uuid}/micrographs", status_code=201)
    async def create_micrograph(foilhole_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), MicrographCreateRequest, compat)
        data = {**body.model_dump(mode="json"), "foilhole_uuid": foilhole_uuid}
        if not state.strict:
            data["status"] = "none"  # SmartEM's micrograph create stores "none", whatever was sent
        await create([NewEntity("micrograph", body.uuid, foilhole_uuid, data)])
        return project("micrograph", data, compat)

    if state.strict:

        @router.post("/foilholes/micrographs/batch", status_code=201)
        async def create_micrographs_batch(request: Request) -> dict[str, Any]:
            """Compatible extension (strict mode only; SmartEM has no micrograph batch and answers 404)."""
            body = parse_one(await request.body(), MicrographBatchCreateRequest, compat)
            missing = [m.uuid for m in body.micrographs if m.foilhole_uuid is None]
            if missing:
                raise _unprocessable(
                    f"foilhole_uuid is required in a batch (missing for {', '.join(missing[:10])})"
                )
            dups = _duplicate_uuids([m.uuid for m in body.micrographs])
            if dups:
                raise _unprocessable(f"duplicate micrograph uuids in batch: {', '.join(dups[:10])}")
            rows = [m.model_dump(mode="json") for m in body.micrographs]
            await create([NewEntity("micrograph", r["uuid"], r["foilhole_uuid"], r) for r in rows])
            return {"micrographs": [project("micrograph", r, compat) for r in rows]}

    @router.get("/foilholes/{foilhole_uuid}/micrographs")
    async def get_foilhole_micrographs(foilhole_uuid: str) -> list[dict[str, Any]]:
        return await list_children("micrograph", "foilhole", foilhole_uuid)

    @router.get("/micrographs/{micrograph_uuid}")
    async def get_micrograph(micrograph_uuid: str) -> dict[str, Any]:
        return shape("micrograph", await get_one("micrograph", micrograph_uuid))

    @router.put("/micrographs/{micrograph_uuid}")
    async def update_micrograph(micrograph_uuid: str, request: Request) -> dict[str, Any]:
        return await update("micrograph", micrograph_uuid, MicrographCreateRequest, request)

    return router


ENTITY_PATHS = _PATH_OF_KIND
"""URL collection name for each entity kind (``GET /{collection}/{uuid}``)."""

__all__ = ["ENTITY_PATHS", "build_entity_router"]
