"""The one table of SmartEM endpoint paths, shared by the sync client, the async client and the SSE client.

Templates use ``str.format`` placeholders; :func:`build` percent-encodes every parameter (ids are opaque
strings: SmartEM's own ids are base64url and may in principle contain characters that need quoting).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

STATUS: Final = "/status"
ACQUISITIONS: Final = "/acquisitions"
ACQUISITION: Final = "/acquisitions/{acquisition_uuid}"
ACQUISITION_GRIDS: Final = "/acquisitions/{acquisition_uuid}/grids"
GRID: Final = "/grids/{grid_uuid}"
GRID_REGISTERED: Final = "/grids/{grid_uuid}/registered"
GRID_ATLAS: Final = "/grids/{grid_uuid}/atlas"
GRID_GRIDSQUARES: Final = "/grids/{grid_uuid}/gridsquares"
GRID_GRIDSQUARES_BATCH: Final = "/grids/{grid_uuid}/gridsquares/batch"
ATLAS: Final = "/atlases/{atlas_uuid}"
ATLAS_TILES: Final = "/atlases/{atlas_uuid}/tiles"
ATLAS_TILE: Final = "/atlas-tiles/{tile_uuid}"
ATLAS_TILE_GRIDSQUARES: Final = "/atlas-tiles/{tile_uuid}/gridsquares"
ATLAS_TILE_GRIDSQUARE: Final = "/atlas-tiles/{tile_uuid}/gridsquares/{gridsquare_uuid}"
GRIDSQUARE: Final = "/gridsquares/{gridsquare_uuid}"
GRIDSQUARE_REGISTERED: Final = "/gridsquares/{gridsquare_uuid}/registered"
GRIDSQUARE_FOILHOLES: Final = "/gridsquares/{gridsquare_uuid}/foilholes"
FOILHOLE: Final = "/foilholes/{foilhole_uuid}"
FOILHOLE_MICROGRAPHS: Final = "/foilholes/{foilhole_uuid}/micrographs"
MICROGRAPHS_BATCH: Final = "/foilholes/micrographs/batch"  # testbed extension, absent on SmartEM
MICROGRAPH: Final = "/micrographs/{micrograph_uuid}"
AGENT_LOGS: Final = "/agent/{agent_id}/session/{session_id}/logs"
AGENT_HEARTBEAT: Final = "/agent/{agent_id}/session/{session_id}/heartbeat"
AGENT_STREAM: Final = "/agent/{agent_id}/session/{session_id}/instructions/stream"
AGENT_ACK: Final = "/agent/{agent_id}/session/{session_id}/instructions/{instruction_id}/ack"
DEBUG_SESSIONS_CREATE: Final = "/debug/sessions/create"
DEBUG_CREATE_INSTRUCTION: Final = "/debug/session/{session_id}/create-instruction"

#: GET path of one entity by kind (used to confirm a create that SmartEM answered with 500).
ENTITY_PATHS: Final[dict[str, str]] = {
    "acquisition": "/acquisitions/{uuid}",
    "grid": "/grids/{uuid}",
    "atlas": "/atlases/{uuid}",
    "atlas_tile": "/atlas-tiles/{uuid}",
    "gridsquare": "/gridsquares/{uuid}",
    "foilhole": "/foilholes/{uuid}",
    "micrograph": "/micrographs/{uuid}",
}


def build(template: str, **params: str) -> str:
    """Fill ``template`` with percent-encoded ``params`` (no ``/`` survives inside a parameter)."""
    return template.format(**{key: quote(str(value), safe="") for key, value in params.items()})


__all__ = [name for name in dir() if name.isupper()] + ["build"]
