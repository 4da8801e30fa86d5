"""Instruction handlers, one module per family; :func:`default_registry` registers them all."""

from __future__ import annotations

from agent.instructions.handlers import agent_handlers, microscope_handlers, sem_handlers
from agent.instructions.registry import HandlerRegistry

__all__ = ["default_registry"]


def default_registry() -> HandlerRegistry:
    """A registry with every built-in instruction type (``agent.*``, ``microscope.control.*``, ``sem.*``)."""
    registry = HandlerRegistry()
    agent_handlers.register(registry)
    microscope_handlers.register(registry)
    sem_handlers.register(registry)
    return registry
