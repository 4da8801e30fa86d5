"""Client of Thermo Fisher's Athena Decision Service (``/api/v1``), for EPU acquisition-queue decisions.

EPU consults Athena for decisions about what to acquire next; the agent turns the backend's
``reorder_gridsquares``, ``skip_gridsquares`` and ``reorder_foilholes`` instructions into decision records
(smartem-reference.md §10): ``DecisionRecord{sessionId, areaId: int, decisionType, pluginType, decisionValue:
str, decidedBy, details}``. Area ids are EPU's integer natural ids (``GridSquare_1234`` -> 1234).

Decision mapping:

* skip grid squares -> one ``gridSquareSelection`` record per square, value ``"false"`` (not selected);
* reorder grid squares or foil holes -> one ``acquisitionOrder`` record per area, value = its 1-based rank;
* select foil holes of a square -> one ``foilHoleSelection`` record on the square whose value is the JSON list
  ``[{"areaId": 100, "result": "true"}, ...]`` (the shape Athena's ``TimedDecision`` returns).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.devices.errors import AthenaError

__all__ = [
    "DECISION_TYPES",
    "PLUGIN_TYPES",
    "AthenaClient",
    "DecisionRecord",
    "area_id",
]

DECISION_TYPES = frozenset(
    {
        "include",
        "focus",
        "stageWaitingTime",
        "acquisitionOrder",
        "foilHoleSelection",
        "gridSquareSelection",
        "iceThicknessFoilHolePrediction",
        "automaticFoilHoleFinding",
    }
)
PLUGIN_TYPES = frozenset({"default", "custom", "dummy"})

_NATURAL_ID = re.compile(r"^(?:GridSquare|FoilHole|gridsquare|foilhole)?_?(\d+)$")


def area_id(value: int | str) -> int:
    """An Athena area id from an EPU natural id (``1234``, ``"1234"``, ``"GridSquare_1234"``)."""
    if isinstance(value, bool):
        raise ValueError(f"not an EPU natural id: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"area ids are non-negative, got {value}")
        return value
    match = _NATURAL_ID.match(value.strip())
    if match is None:
        raise ValueError(f"not an EPU natural id: {value!r}")
    return int(match.group(1))


class DecisionRecord(BaseModel):
    """One Athena decision (camelCase on the wire)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: int | str | None = None
    session_id: str = Field(alias="sessionId")
    area_id: int = Field(alias="areaId")
    decision_type: str = Field(alias="decisionType")
    plugin_type: str = Field("custom", alias="pluginType")
    decision_value: str = Field(alias="decisionValue")
    decided_by: str = Field("em-agent", alias="decidedBy")
    details: str | None = None
    timestamp: str | None = None

    def wire(self) -> dict[str, Any]:
        """The request body form (camelCase, no server-assigned fields)."""
        return self.model_dump(by_alias=True, exclude={"id", "timestamp"}, exclude_none=True)


class AthenaClient:
    """Async client of the Athena Decision Service. Use ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        decided_by: str = "em-agent",
        plugin_type: Literal["default", "custom", "dummy"] = "custom",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.decided_by = decided_by
        self.plugin_type = plugin_type
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/api/v1", headers=headers, timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AthenaClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, json=body, params=query or None)
        except httpx.HTTPError as exc:
            raise AthenaError(f"{method} {path}: cannot reach the decision service: {exc}") from exc
        if not response.is_success:
            detail = response.text[:200]
            raise AthenaError(
                f"{method} {path}: {detail or response.reason_phrase}", status_code=response.status_code
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise AthenaError(f"{method} {path}: expected JSON", status_code=response.status_code) from exc

    # --------------------------------------------------------------------------------- service, sessions
    async def status(self) -> Any:
        """``GET /Athena/Status``."""
        return await self._request("GET", "/Athena/Status")

    async def version(self) -> Any:
        """``GET /Version``."""
        return await self._request("GET", "/Version")

    async def create_session(
        self, session_name: str, *, session_id: str | None = None, grid_type: str | None = None
    ) -> dict[str, Any]:
        """``POST /Session``."""
        body = {"sessionId": session_id, "sessionName": session_name, "gridType": grid_type}
        return dict(
            await self._request("POST", "/Session", body={k: v for k, v in body.items() if v is not None})
        )

    async def get_session(self, session_id: str) -> dict[str, Any]:
        """``GET /Session/{id}``."""
        return dict(await self._request("GET", f"/Session/{quote(session_id, safe='')}"))

    async def is_registered(self, session_id: str) -> bool:
        """``GET /Session/{id}/IsRegistered``."""
        return bool(await self._request("GET", f"/Session/{quote(session_id, safe='')}/IsRegistered"))

    async def find_sessions(self, session_name: str) -> list[dict[str, Any]]:
        """``GET /Sessions?sessionName=``."""
        return list(await self._request("GET", "/Sessions", params={"sessionName": session_name}) or [])

    async def register_areas(
        self, session_id: str, areas: Iterable[tuple[int | str, str, int | str | None]]
    ) -> list[dict[str, Any]]:
        """``POST /Areas`` for ``(area id, area type, parent id)`` triples (types: gridsquare, foilhole)."""
        body = [
            {
                "sessionId": session_id,
                "areaId": area_id(a),
                "areaType": kind,
                **({"parentId": area_id(parent)} if parent is not None else {}),
            }
            for a, kind, parent in areas
        ]
        return list(await self._request("POST", "/Areas", body=body) or [])

    # ------------------------------------------------------------------------------------------- decisions
    def _record(
        self, session_id: str, area: int | str, decision_type: str, value: str, details: str | None
    ) -> DecisionRecord:
        return DecisionRecord(
            session_id=session_id,
            area_id=area_id(area),
            decision_type=decision_type,
            plugin_type=self.plugin_type,
            decision_value=value,
            decided_by=self.decided_by,
            details=details,
        )

    async def post_decisions(self, records: Sequence[DecisionRecord]) -> list[DecisionRecord]:
        """``POST /Decisions``: store records, return them as the service stored them."""
        for record in records:
            if record.decision_type not in DECISION_TYPES:
                raise ValueError(f"unknown decision type {record.decision_type!r}")
        data = await self._request("POST", "/Decisions", body=[r.wire() for r in records])
        try:
            return [DecisionRecord.model_validate(item) for item in (data or [])]
        except ValidationError as exc:
            raise AthenaError(f"malformed decision records from the service: {exc}") from exc

    async def get_decisions(self, session_id: str) -> list[DecisionRecord]:
        """``GET /Session/{sid}/Decisions``."""
        data = await self._request("GET", f"/Session/{quote(session_id, safe='')}/Decisions")
        return [DecisionRecord.model_validate(item) for item in (data or [])]

    async def latest_decision(
        self, session_id: str, area: int | str, decision_type: str, plugin_type: str | None = None
    ) -> DecisionRecord | None:
        """``GET /Session/{sid}/LatestDecision``; ``None`` when there is none."""
        params = {"areaId": area_id(area), "decisionType": decision_type, "pluginType": plugin_type}
        try:
            data = await self._request(
                "GET", f"/Session/{quote(session_id, safe='')}/LatestDecision", params=params
            )
        except AthenaError as exc:
            if exc.status_code == 404:
                return None
            raise
        return None if data is None else DecisionRecord.model_validate(data)

    async def skip_gridsquares(
        self, session_id: str, gridsquare_ids: Sequence[int | str], reason: str | None = None
    ) -> list[DecisionRecord]:
        """Deselect grid squares: ``gridSquareSelection`` = ``"false"`` for each."""
        if not gridsquare_ids:
            raise ValueError("no grid squares to skip")
        records = [
            self._record(session_id, g, "gridSquareSelection", "false", reason) for g in gridsquare_ids
        ]
        return await self.post_decisions(records)

    async def reorder_gridsquares(
        self, session_id: str, gridsquare_ids: Sequence[int | str], reason: str | None = None
    ) -> list[DecisionRecord]:
        """Set the acquisition order of grid squares: ``acquisitionOrder`` = 1-based rank."""
        return await self._order(session_id, gridsquare_ids, reason)

    async def reorder_foilholes(
        self,
        session_id: str,
        gridsquare_id: int | str,
        foilhole_ids: Sequence[int | str],
        reason: str | None = None,
    ) -> list[DecisionRecord]:
        """Set the acquisition order of foil holes within a grid square (``acquisitionOrder`` per hole)."""
        square = area_id(gridsquare_id)
        details = f"gridsquare {square}" + (f": {reason}" if reason else "")
        return await self._order(session_id, foilhole_ids, details)

    async def select_foilholes(
        self,
        session_id: str,
        gridsquare_id: int | str,
        selections: Mapping[int | str, bool],
        reason: str | None = None,
    ) -> list[DecisionRecord]:
        """Select or deselect foil holes of a grid square: one ``foilHoleSelection`` record on the square."""
        if not selections:
            raise ValueError("no foil holes to select")
        value = json.dumps(
            [{"areaId": area_id(h), "result": "true" if keep else "false"} for h, keep in selections.items()],
            separators=(",", ":"),
        )
        return await self.post_decisions(
            [self._record(session_id, gridsquare_id, "foilHoleSelection", value, reason)]
        )

    async def _order(
        self, session_id: str, ids: Sequence[int | str], details: str | None
    ) -> list[DecisionRecord]:
        areas = [area_id(a) for a in ids]
        if not areas:
            raise ValueError("nothing to reorder")
        if len(set(areas)) != len(areas):
            raise ValueError(f"duplicate ids in the new order: {areas}")
        records = [
            self._record(session_id, a, "acquisitionOrder", str(rank), details)
            for rank, a in enumerate(areas, 1)
        ]
        return await self.post_decisions(records)
