"""SmartEMAPIClient / AsyncSmartEMAPIClient against the testbed backend over real loopback HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend_client import (
    AsyncSmartEMAPIClient,
    ConflictError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    SmartEMAPIClient,
)
from backend_client.models import (
    AcquisitionCreateRequest,
    AtlasCreateRequest,
    AtlasTileCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    GridSquarePositionRequest,
    MicrographCreateRequest,
)
from testbed.backend import BackendServer

pytestmark = pytest.mark.integration


def _chain(client: SmartEMAPIClient) -> None:
    client.create_acquisition_request(AcquisitionCreateRequest(uuid="acq", name="A", status="started"))
    client.create_grid_request(GridCreateRequest(uuid="grid", name="A", acquisition_uuid="acq"))
    client.create_atlas_request(
        AtlasCreateRequest(
            uuid="atlas",
            grid_uuid="grid",
            name="Atlas",
            tiles=[AtlasTileCreateRequest(uuid="tile", atlas_uuid="atlas")],
        )
    )
    squares = [
        GridSquareCreateRequest(uuid=f"gs{i}", gridsquare_id=str(i), grid_uuid="grid") for i in range(3)
    ]
    client.create_gridsquares_batch_request("grid", squares)
    client.link_tile_gridsquares_request(
        "tile",
        [
            GridSquarePositionRequest(
                center_x=1, center_y=2, size_width=3, size_height=4, gridsquare_uuid="gs0"
            )
        ],
    )
    holes = [
        FoilHoleCreateRequest(uuid=f"fh{i}", foilhole_id=str(i), gridsquare_id="0", gridsquare_uuid="gs0")
        for i in range(4)
    ]
    client.create_foilholes_request("gs0", holes)
    client.create_micrograph_request(MicrographCreateRequest(uuid="m0", foilhole_id="0", foilhole_uuid="fh0"))
    assert client.mark_gridsquare_registered("gs0", 3) is True
    assert client.mark_grid_registered("grid") is True


def test_entity_chain_on_strict_backend_and_409_on_duplicates(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "b.db") as server, SmartEMAPIClient(server.url) as client:
        _chain(client)
        assert client.create_micrographs_batch_request(
            [MicrographCreateRequest(uuid=f"mb{i}", foilhole_id="1", foilhole_uuid="fh1") for i in range(5)]
        )
        counts = server.counts()
        assert counts["gridsquare"] == 3
        assert counts["foilhole"] == 4
        assert counts["micrograph"] == 6
        with pytest.raises(ConflictError):
            client.create_grid_request(GridCreateRequest(uuid="grid", name="A", acquisition_uuid="acq"))
        assert [g.uuid for g in client.get_acquisition_grids("acq")] == ["grid"]


def test_smartem_duplicate_create_is_a_server_error_and_the_entity_can_be_confirmed(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "b.db", compat="smartem") as server, SmartEMAPIClient(server.url) as client:
        _chain(client)
        with pytest.raises(ServerError) as info:
            client.create_acquisition_request(AcquisitionCreateRequest(uuid="acq", name="A"))
        # the server closed the keep-alive connection after its 500: the next request must still work
        assert client.get_entity(info.value.entity_kind or "", info.value.entity_uuid or "")["uuid"] == "acq"
        with pytest.raises(NotFoundError):
            client.get_entity("acquisition", "never-created")
        with pytest.raises(
            NotFoundError
        ):  # SmartEM has no micrograph batch: the outbox falls back to singles
            client.create_micrographs_batch_request(
                [MicrographCreateRequest(uuid="x", foilhole_id="1", foilhole_uuid="fh1")]
            )


async def test_async_client_retries_injected_503_with_retry_after(tmp_path: Path) -> None:
    with BackendServer(tmp_path / "b.db") as server:
        server.fail_next(2, status=503, retry_after=0.05)
        async with AsyncSmartEMAPIClient(server.url, retry=RetryPolicy(attempts=4, wait_max=0.1)) as client:
            response = await client.create_acquisition_request(AcquisitionCreateRequest(uuid="acq", name="A"))
        assert response.uuid == "acq"
        assert server.counts()["acquisition"] == 1
