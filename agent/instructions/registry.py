"""The handler registry: one payload model and one handler per instruction type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from agent.instructions.models import JsonDict, Lane

if TYPE_CHECKING:
    from agent.instructions.context import Call

P = TypeVar("P", bound=BaseModel)

Handler = Callable[[P, "Call"], Awaitable[JsonDict]]


@dataclass(frozen=True)
class HandlerSpec(Generic[P]):
    """How one instruction type is validated and executed.

    ``payload_model`` must forbid extra fields so a misspelt key is declined rather than ignored; ``lane``
    says whether the handler touches the instrument (``device``: one at a time) or only reads agent state
    (``query``).
    """

    instruction_type: str
    payload_model: type[P]
    handler: Handler[P]
    lane: Lane
    summary: str

    def __post_init__(self) -> None:
        if self.payload_model.model_config.get("extra") != "forbid":
            raise ValueError(f"payload model of {self.instruction_type} must set extra='forbid'")


class HandlerRegistry:
    """Instruction type -> :class:`HandlerSpec`."""

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec[Any]] = {}

    def register(self, spec: HandlerSpec[Any]) -> None:
        """Add ``spec``; a type may be registered once."""
        if spec.instruction_type in self._specs:
            raise ValueError(f"instruction type {spec.instruction_type!r} is already registered")
        self._specs[spec.instruction_type] = spec

    def add(
        self, instruction_type: str, payload_model: type[P], lane: Lane, summary: str
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: Handler[P]) -> Handler[P]:
            self.register(HandlerSpec(instruction_type, payload_model, handler, lane, summary))
            return handler

        return decorate

    def get(self, instruction_type: str) -> HandlerSpec[Any] | None:
        """The spec of ``instruction_type`` (None if unknown)."""
        return self._specs.get(instruction_type)

    def lane_of(self, instruction_type: str) -> Lane:
        """The lane an instruction runs in; unknown types are declined in the query lane (they never act)."""
        spec = self._specs.get(instruction_type)
        return spec.lane if spec is not None else Lane.QUERY

    def types(self) -> list[str]:
        """All registered types, sorted."""
        return sorted(self._specs)

    def __iter__(self) -> Iterator[HandlerSpec[Any]]:
        return iter(self._specs[t] for t in self.types())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, instruction_type: object) -> bool:
        return instruction_type in self._specs
