"""An Athena Decision Service stand-in (FastAPI) that stores sessions, areas and decisions in memory.

It implements the subset of ``/api/v1`` the agent uses, strictly (unknown fields and enum values are rejected
so drift in the client shows up in tests): Session(s), Area(s), Decision(s), LatestDecision, Athena/Status,
Version. ``GET /testbed/decisions`` lists every stored decision across sessions, for tests.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AthenaStore", "create_app"]

DecisionType = Literal[
    "include",
    "focus",
    "stageWaitingTime",
    "acquisitionOrder",
    "foilHoleSelection",
    "gridSquareSelection",
    "iceThicknessFoilHolePrediction",
    "automaticFoilHoleFinding",
]
PluginType = Literal["default", "custom", "dummy"]
AreaType = Literal["gridsquare", "foilhole", "atlas", "particle"]


class SessionIn(BaseModel):
    """``POST /Session`` body."""

    model_config = ConfigDict(extra="forbid")
    sessionId: str | None = None  # noqa: N815 - Athena's wire names
    sessionName: str = Field(min_length=1)  # noqa: N815
    gridType: Literal["HoleyCarbon", "HoleyGold", "LaceyCarbon"] | None = None  # noqa: N815


class AreaIn(BaseModel):
    """``POST /Area(s)`` body item."""

    model_config = ConfigDict(extra="forbid")
    sessionId: str  # noqa: N815
    areaId: int = Field(ge=0)  # noqa: N815
    areaType: AreaType  # noqa: N815
    parentId: int | None = None  # noqa: N815


class DecisionIn(BaseModel):
    """``POST /Decision(s)`` body item."""

    model_config = ConfigDict(extra="forbid", strict=True)
    sessionId: str  # noqa: N815
    areaId: int = Field(ge=0)  # noqa: N815
    decisionType: DecisionType  # noqa: N815
    pluginType: PluginType = "custom"  # noqa: N815
    decisionValue: str  # noqa: N815
    decidedBy: str = Field(min_length=1)  # noqa: N815
    details: str | None = None


class AthenaStore:
    """Thread-safe in-memory state of the stand-in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.areas: dict[tuple[str, int], dict[str, Any]] = {}
        self.decisions: list[dict[str, Any]] = []

    def add_session(self, body: SessionIn) -> dict[str, Any]:
        """Create (or return the existing) session."""
        with self._lock:
            sid = body.sessionId or f"session-{next(self._ids)}"
            session = self.sessions.setdefault(
                sid, {"sessionId": sid, "sessionName": body.sessionName, "gridType": body.gridType}
            )
            return dict(session)

    def session(self, session_id: str) -> dict[str, Any]:
        """One session (404 when unknown)."""
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise HTTPException(404, f"unknown session {session_id}")
        return dict(session)

    def add_areas(self, items: list[AreaIn]) -> list[dict[str, Any]]:
        """Create or update areas."""
        for item in items:
            self.session(item.sessionId)
        with self._lock:
            for item in items:
                self.areas[(item.sessionId, item.areaId)] = item.model_dump()
        return [item.model_dump() for item in items]

    def add_decisions(self, items: list[DecisionIn]) -> list[dict[str, Any]]:
        """Store decisions with server-assigned id and timestamp."""
        for item in items:
            self.session(item.sessionId)
        now = datetime.now(UTC).isoformat()
        with self._lock:
            stored = [{**item.model_dump(), "id": next(self._ids), "timestamp": now} for item in items]
            self.decisions.extend(stored)
        return [dict(d) for d in stored]

    def session_decisions(self, session_id: str) -> list[dict[str, Any]]:
        """Decisions of a session, oldest first."""
        self.session(session_id)
        with self._lock:
            return [dict(d) for d in self.decisions if d["sessionId"] == session_id]


def create_app(store: AthenaStore | None = None) -> FastAPI:
    """The stand-in app over ``store`` (a fresh one by default)."""
    state = store or AthenaStore()
    app = FastAPI(title="Athena Decision Service (testbed stand-in)", docs_url=None, redoc_url=None)
    app.state.store = state

    @app.get("/api/v1/Athena/Status")
    async def status() -> dict[str, str]:
        return {"engineState": "running"}

    @app.get("/api/v1/Version")
    async def version() -> dict[str, str]:
        return {"version": "1.0.0-testbed"}

    @app.post("/api/v1/Session")
    async def create_session(body: SessionIn) -> dict[str, Any]:
        return state.add_session(body)

    @app.get("/api/v1/Session/{session_id}")
    async def get_session(session_id: str) -> dict[str, Any]:
        return state.session(session_id)

    @app.get("/api/v1/Session/{session_id}/IsRegistered")
    async def is_registered(session_id: str) -> bool:
        return session_id in state.sessions

    @app.get("/api/v1/Sessions")
    async def sessions(sessionName: str | None = None, sessionId: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        return [
            dict(s)
            for s in list(state.sessions.values())
            if (sessionName is None or s["sessionName"] == sessionName)
            and (sessionId is None or s["sessionId"] == sessionId)
        ]

    @app.post("/api/v1/Area")
    async def area(body: AreaIn) -> dict[str, Any]:
        return state.add_areas([body])[0]

    @app.post("/api/v1/Areas")
    async def areas(body: list[AreaIn]) -> list[dict[str, Any]]:
        return state.add_areas(body)

    @app.get("/api/v1/Session/{session_id}/Areas")
    async def list_areas(
        session_id: str,
        areaType: AreaType | None = None,  # noqa: N803
        parentAreaId: int | None = None,  # noqa: N803
    ) -> list[dict[str, Any]]:
        state.session(session_id)
        return [
            dict(a)
            for (sid, _), a in list(state.areas.items())
            if sid == session_id
            and (areaType is None or a["areaType"] == areaType)
            and (parentAreaId is None or a["parentId"] == parentAreaId)
        ]

    @app.post("/api/v1/Decision")
    async def decision(body: DecisionIn) -> dict[str, Any]:
        return state.add_decisions([body])[0]

    @app.post("/api/v1/Decisions")
    async def decisions(body: list[DecisionIn]) -> list[dict[str, Any]]:
        return state.add_decisions(body)

    @app.get("/api/v1/Session/{session_id}/Decisions")
    async def session_decisions(session_id: str) -> list[dict[str, Any]]:
        return state.session_decisions(session_id)

    @app.delete("/api/v1/Session/{session_id}/Decisions")
    async def delete_decisions(session_id: str) -> dict[str, int]:
        state.session(session_id)
        with state._lock:
            before = len(state.decisions)
            state.decisions = [d for d in state.decisions if d["sessionId"] != session_id]
            return {"deleted": before - len(state.decisions)}

    @app.get("/api/v1/Session/{session_id}/LatestDecision")
    async def latest(
        session_id: str,
        areaId: int,  # noqa: N803
        decisionType: DecisionType | None = None,  # noqa: N803
        pluginType: PluginType | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        matches = [
            d
            for d in state.session_decisions(session_id)
            if d["areaId"] == areaId
            and (decisionType is None or d["decisionType"] == decisionType)
            and (pluginType is None or d["pluginType"] == pluginType)
        ]
        if not matches:
            raise HTTPException(404, "no decision")
        return matches[-1]

    @app.get("/testbed/decisions")
    async def all_decisions() -> list[dict[str, Any]]:
        with state._lock:
            return [dict(d) for d in state.decisions]

    return app
