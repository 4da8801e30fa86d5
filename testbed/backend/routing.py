"""A router tuned for the testbed: no response-model inference.

The handlers return plain JSON-ready dicts and lists. FastAPI would otherwise build a pydantic adapter from
each handler's return annotation, which costs about 2 ms per route at every app start; tests start dozens of
servers, so skipping that keeps the suite fast. Response shapes are fixed by :mod:`testbed.backend.shapes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter


class Router(APIRouter):
    """``APIRouter`` whose routes never infer a response model."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        """Register a route with ``response_model=None``."""
        kwargs["response_model"] = None
        super().add_api_route(path, endpoint, **kwargs)


__all__ = ["Router"]
