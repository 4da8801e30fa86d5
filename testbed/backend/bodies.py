"""Request-body parsing for both compatibility modes, reusing the request models of ``converters.requests``.

``strict``: the body is validated as JSON in pydantic's strict mode against models that forbid unknown fields,
so a misspelt field, a string where a number belongs, or a number where a string belongs is a 422.
``smartem``: unknown fields are dropped (at every nesting level) and values are coerced as SmartEM's FastAPI
does, so such a body is accepted exactly as the real backend accepts it.
"""

from __future__ import annotations

import functools
import json
from typing import Any, TypeVar, get_args

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from testbed.backend.options import Compat

M = TypeVar("M", bound=BaseModel)


@functools.cache
def _adapter(model: type[BaseModel], many: bool) -> TypeAdapter[Any]:
    return TypeAdapter(list[model] if many else model)  # type: ignore[valid-type]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def strip_unknown(model: type[BaseModel], value: Any) -> Any:
    """Drop keys that ``model`` (and its nested models) does not declare, as a lenient server does."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        nested = _nested_model(field.annotation)
        if nested is not None and isinstance(item, list):
            item = [strip_unknown(nested, x) for x in item]
        elif nested is not None and isinstance(item, dict):
            item = strip_unknown(nested, item)
        out[key] = item
    return out


def _validate(raw: bytes, model: type[BaseModel], compat: Compat, *, many: bool, forbid_unknown: bool) -> Any:
    adapter = _adapter(model, many)
    try:
        if compat == "strict":
            return adapter.validate_json(raw, strict=True)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}", "input": {}}]
            ) from exc
        if not forbid_unknown:
            if many and isinstance(data, list):
                data = [strip_unknown(model, item) for item in data]
            else:
                data = strip_unknown(model, data)
        return adapter.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def parse_one(raw: bytes, model: type[M], compat: Compat, *, forbid_unknown: bool = False) -> M:
    """Validate a JSON object body against ``model``; 422 (``RequestValidationError``) when invalid.

    ``forbid_unknown`` keeps unknown fields an error in smartem mode too (SmartEM's ack model forbids
    them)."""
    result: M = _validate(raw, model, compat, many=False, forbid_unknown=forbid_unknown)
    return result


def parse_many(raw: bytes, model: type[M], compat: Compat) -> list[M]:
    """Validate a JSON array body whose items are ``model``; 422 when invalid."""
    result: list[M] = _validate(raw, model, compat, many=True, forbid_unknown=False)
    return result


__all__ = ["parse_many", "parse_one", "strip_unknown"]
