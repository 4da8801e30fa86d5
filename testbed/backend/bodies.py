"""Request-body parsing for both compatibility modes, reusing the request models of ``converters.requests``.

``strict``: the body is validated as JSON in pydantic's strict mode against models that forbid unknown fields,
so a misspelt field, a string where a number belongs, or a number where a string belongs is a 422.
``smartem``: unknown fields are dropped (at every nesting level) and values are coerced as SmartEM's FastAPI
does, so such a body is accepted exactly as the real backend accepts it.

Datetimes with a UTC offset are refused in both modes, as on the real backend, whose PostgreSQL columns are
``timestamp without time zone`` (asyncpg cannot store an aware value there): ``strict`` answers 422 naming the
field, ``smartem`` crashes like SmartEM does (500 ``text/plain``, nothing stored). Bodies whose datetimes the
real backend never stores (the ack's ``processed_at``) opt out with ``naive_datetimes=False``.

Status values are checked against SmartEM's vocabularies in both modes (:mod:`testbed.backend.statuses`): a 422,
as SmartEM's enum-typed models answer. Updates (:func:`parse_update`) take SmartEM's update models in smartem
mode, where every field is optional (a PUT may carry one field); strict mode keeps the create shape.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, TypeVar, get_args

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from testbed.backend.errors import ServerCrash
from testbed.backend.options import Compat
from testbed.backend.statuses import status_errors

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


def _aware_datetimes(value: Any, loc: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Locations of datetimes carrying a UTC offset inside a validated body."""
    if isinstance(value, datetime):
        return [loc] if value.tzinfo is not None and value.utcoffset() is not None else []
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found.extend(_aware_datetimes(getattr(value, name), (*loc, name)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_aware_datetimes(item, (*loc, i)))
    return found


def _refuse_aware(parsed: Any, compat: Compat) -> Any:
    aware = _aware_datetimes(parsed)
    if not aware:
        return parsed
    if compat == "smartem":
        raise ServerCrash("DataError: can't subtract offset-naive and offset-aware datetimes")
    raise RequestValidationError(
        [
            {
                "type": "datetime_aware",
                "loc": ("body", *loc),
                "msg": "datetime must be naive UTC (no offset): SmartEM stores timestamp without time zone",
                "input": None,
            }
            for loc in aware
        ]
    )


def _validate(
    raw: bytes,
    model: type[BaseModel],
    compat: Compat,
    *,
    many: bool,
    forbid_unknown: bool,
    naive_datetimes: bool,
) -> Any:
    parsed = _parse(raw, model, compat, many=many, forbid_unknown=forbid_unknown)
    # SmartEM's models validate statuses as enums, so a bad status is a 422 before any datetime reaches the
    # database.
    bad_statuses = status_errors(parsed)
    if bad_statuses:
        raise RequestValidationError(bad_statuses)
    return _refuse_aware(parsed, compat) if naive_datetimes else parsed


def _parse(raw: bytes, model: type[BaseModel], compat: Compat, *, many: bool, forbid_unknown: bool) -> Any:
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


def parse_one(
    raw: bytes, model: type[M], compat: Compat, *, forbid_unknown: bool = False, naive_datetimes: bool = True
) -> M:
    """Validate a JSON object body against ``model``; 422 (``RequestValidationError``) when invalid.

    ``forbid_unknown`` keeps unknown fields an error in smartem mode too (SmartEM's ack model forbids
    them). ``naive_datetimes`` refuses datetimes with an offset (see the module docstring)."""
    result: M = _validate(
        raw, model, compat, many=False, forbid_unknown=forbid_unknown, naive_datetimes=naive_datetimes
    )
    return result


@functools.cache
def update_model(model: type[M]) -> type[M]:
    """``model`` with every required field made optional: the shape of SmartEM's ``*UpdateRequest`` models,
    where a PUT may carry any subset of the fields. A subclass of ``model``, so its status vocabulary holds."""
    optional: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.is_required() and field.annotation is not None:
            optional[name] = (field.annotation | None, None)
    partial: type[M] = create_model(f"{model.__name__}Update", __base__=model, **optional)
    return partial


def parse_update(raw: bytes, model: type[M], compat: Compat) -> M:
    """Validate a PUT body: the full ``model`` in strict mode, its all-optional :func:`update_model` in smartem
    mode (SmartEM's update models have no required field)."""
    return parse_one(raw, model if compat == "strict" else update_model(model), compat)


def parse_many(raw: bytes, model: type[M], compat: Compat) -> list[M]:
    """Validate a JSON array body whose items are ``model``; 422 when invalid (aware datetimes included)."""
    result: list[M] = _validate(raw, model, compat, many=True, forbid_unknown=False, naive_datetimes=True)
    return result


__all__ = ["parse_many", "parse_one", "parse_update", "strip_unknown", "update_model"]
