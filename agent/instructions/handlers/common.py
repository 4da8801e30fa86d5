"""Helpers shared by the device handlers: device access, path confinement, safe names."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from agent.devices.microscope import Microscope
from agent.instructions.context import Call
from agent.instructions.errors import InstructionDeclined

T = TypeVar("T")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


async def on_device(call: Call, fn: Callable[[Microscope], Awaitable[T]]) -> T:
    """Await ``fn(device)`` in the device lane; declined when the agent has no device configured."""
    handle = call.context.device
    if handle is None:
        raise InstructionDeclined(
            "no microscope device is configured on this agent (device.backend = 'none')"
        )
    result: T = await handle.run(fn)
    return result


def safe_name(text: str, *, max_len: int = 120) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``; never empty, never a dot name)."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:max_len]
    return cleaned or "unnamed"


def confined(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refusing anything that would land outside ``root`` (``..``, absolute
    parts)."""
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise InstructionDeclined(f"path {'/'.join(parts)!r} escapes {base}")
    return target
