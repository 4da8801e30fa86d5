"""SmartEM's status vocabularies, enforced on entity bodies in both modes.

SmartEM's request models type ``status`` as its enums (``smartem_common/entity_status.py``), so a value outside
the vocabulary (``"running"``), or an enum's name instead of its value (``"STARTED"``), is a 422 there before
anything is stored. The agent's request models (``converters.requests``) keep ``status`` a plain string, so the
testbed checks the values itself, after the model has validated the body and before anything else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from converters.requests import (
    AcquisitionCreateRequest,
    FoilHoleCreateRequest,
    GridCreateRequest,
    GridSquareCreateRequest,
    MicrographCreateRequest,
)

ACQUISITION_STATUSES = ("planned", "started", "completed", "paused", "abandoned")
GRID_STATUSES = (
    "none",
    "scan started",
    "scan completed",
    "grid squares decision started",
    "grid squares decision completed",
)
GRIDSQUARE_STATUSES = (
    "none",
    "all foil holes registered",
    "foil holes decision started",
    "foil holes decision completed",
)
FOILHOLE_STATUSES = ("none", "micrographs detected")
MICROGRAPH_STATUSES = (
    "none",
    "motion correction started",
    "motion correction completed",
    "ctf started",
    "ctf completed",
    "particle picking started",
    "particle picking completed",
    "particle selection started",
    "particle selection completed",
)

# By request model; a subclass (the partial-update variants of `bodies`) inherits its base's vocabulary.
_VOCABULARY: tuple[tuple[type[BaseModel], tuple[str, ...]], ...] = (
    (AcquisitionCreateRequest, ACQUISITION_STATUSES),
    (GridCreateRequest, GRID_STATUSES),
    (GridSquareCreateRequest, GRIDSQUARE_STATUSES),
    (FoilHoleCreateRequest, FOILHOLE_STATUSES),
    (MicrographCreateRequest, MICROGRAPH_STATUSES),
)


def _vocabulary(model: BaseModel) -> tuple[str, ...] | None:
    for cls, values in _VOCABULARY:
        if isinstance(model, cls):
            return values
    return None


def status_errors(value: Any, loc: tuple[str | int, ...] = ("body",)) -> list[dict[str, Any]]:
    """Validation errors (FastAPI's shape, ``type`` ``enum``) for every status outside its vocabulary in a
    validated body: a model, a list of models, or models nested in either."""
    errors: list[dict[str, Any]] = []
    if isinstance(value, BaseModel):
        allowed = _vocabulary(value)
        status = getattr(value, "status", None)
        if allowed is not None and status is not None and status not in allowed:
            errors.append(
                {
                    "type": "enum",
                    "loc": (*loc, "status"),
                    "msg": "Input should be " + ", ".join(f"'{v}'" for v in allowed),
                    "input": status,
                }
            )
        for name in type(value).model_fields:
            if name != "status":
                errors.extend(status_errors(getattr(value, name), (*loc, name)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            errors.extend(status_errors(item, (*loc, i)))
    return errors


__all__ = [
    "ACQUISITION_STATUSES",
    "FOILHOLE_STATUSES",
    "GRIDSQUARE_STATUSES",
    "GRID_STATUSES",
    "MICROGRAPH_STATUSES",
    "status_errors",
]
