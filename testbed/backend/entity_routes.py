"""SmartEM's entity endpoints (smartem-reference.md table 2.2 and section 2.3) plus the GETs of the seed
client.

Rules common to both modes: path parameters are authoritative over body fields (the uuid of a PUT, the parent
uuid of a create); a missing parent is 404; updates merge only the fields the client sent and never move an
entity to another parent. Duplicate creates are 409 in strict mode and SmartEM's unhandled 500 in smartem mode
(except the grid-square batch, where SmartEM itself answers 409).
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
from testbed.backend.bodies import parse_many, parse_one
from testbed.backend.entity_store import NewEntity
from testbed.backend.errors import DuplicateEntity, NotFound, ServerCrash
from testbed.backend.routing import Router
from testbed.backend.shapes import project
from testbed.backend.state import BackendState, in_thread

# Parent-link fields an update must not change (the entity stays where it was created).
_PARENT_FIELDS = frozenset(
    {"uuid", "acquisition_uuid", "grid_uuid", "atlas_uuid", "gridsquare_uuid", "foilhole_uuid"}
)

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


def _unprocessable(msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ["body"], "msg": msg, "input": None}])


def build_entity_router(state: BackendState) -> APIRouter:
    """All entity routes bound to ``state``."""
    router = Router(tags=["entities"])
    compat = state.options.compat

    def shape(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
        return project(kind, stored["data"], compat)

    async def create(
        entities: list[NewEntity], *, smartem_conflict_is_409: bool = False
    ) -> list[dict[str, Any]]:
        try:
            return await in_thread(state.entities.create, entities)
        except DuplicateEntity as exc:
            if state.strict or smartem_conflict_is_409:
                raise
            raise ServerCrash(f"IntegrityError: {exc.detail}") from exc

    async def update(kind: str, uuid: str, model_cls: Any, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), model_cls, compat)
        fields = body.model_dump(mode="json", include=body.model_fields_set - _PARENT_FIELDS)
        stored = await in_thread(state.entities.update, kind, uuid, fields)
        return shape(kind, stored)

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
        tiles = await in_thread(state.entities.children, "atlas_tile", stored["uuid"])
        body["tiles"] = [shape("atlas_tile", t) for t in tiles]
        return body

    # -- acquisitions ----------------------------------------------------------------------------------------

    @router.post("/acquisitions", status_code=201)
    async def create_acquisition(request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), AcquisitionCreateRequest, compat)
        data = body.model_dump(mode="json")
        nameless = data["name"] is None
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
        await in_thread(state.entities.mark_registered, "grid", grid_uuid)
        return True

    # -- atlas and tiles -------------------------------------------------------------------------------------

    @router.post("/grids/{grid_uuid}/atlas", status_code=201)
    async def create_atlas(grid_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), AtlasCreateRequest, compat)
        data = {**body.model_dump(mode="json", exclude={"tiles"}), "grid_uuid": grid_uuid}
        tiles = [{**t.model_dump(mode="json"), "atlas_uuid": body.uuid} for t in body.tiles or []]
        await create(
            [NewEntity("atlas", body.uuid, grid_uuid, data)]
            + [NewEntity("atlas_tile", t["uuid"], body.uuid, t) for t in tiles]
        )
        return {**project("atlas", data, compat), "tiles": [project("atlas_tile", t, compat) for t in tiles]}

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
        try:
            return await in_thread(
                state.entities.link_positions, tile_uuid, rows, duplicates_conflict=not state.strict
            )
        except DuplicateEntity as exc:
            if state.strict:
                raise
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
        await create([NewEntity("gridsquare", body.uuid, grid_uuid, data)])
        return project("gridsquare", data, compat)

    @router.post("/grids/{grid_uuid}/gridsquares/batch", status_code=201)
    async def create_gridsquares_batch(grid_uuid: str, request: Request) -> dict[str, Any]:
        body = parse_one(await request.body(), GridSquareBatchCreateRequest, compat)
        dups = _duplicate_uuids([g.uuid for g in body.gridsquares])
        if dups:
            raise _unprocessable(f"duplicate gridsquare uuids in batch: {', '.join(dups[:10])}")
        rows = [{**g.model_dump(mode="json"), "grid_uuid": grid_uuid} for g in body.gridsquares]
        await create(
            [NewEntity("gridsquare", r["uuid"], grid_uuid, r) for r in rows], smartem_conflict_is_409=True
        )
        return {"gridsquares": [project("gridsquare", r, compat) for r in rows]}

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
        rows = [{**h.model_dump(mode="json"), "gridsquare_uuid": gridsquare_uuid} for h in holes]
        if state.strict:
            dups = _duplicate_uuids([r["uuid"] for r in rows])
            if dups:
                raise _unprocessable(f"duplicate foilhole uuids in batch: {', '.join(dups[:10])}")
        if not rows:
            await get_one("gridsquare", gridsquare_uuid)
            return []
        await create([NewEntity("foilhole", r["uuid"], gridsquare_uuid, r) for r in rows])
        return [project("foilhole", r, compat) for r in rows]

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
