"""Last-resort exit for a shutdown that does not finish.

Every part of the agent bounds its own stop, but a thread can still block where no timeout reaches it (a driver
call, a lock held by a stuck thread), and ``asyncio.run`` joins its worker threads without a bound. A service
that never exits is worse than one that exits with an error: systemd would SIGKILL it after ``TimeoutStopSec``
without saying where it hung, and the Windows service manager would show it as "stopping" forever. Once a stop
has begun, :func:`arm` makes the process print every thread's stack to stderr (the journal or the service log)
and exit with status 1 if it is still alive after the given time.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

__all__ = ["arm", "disarm", "run"]

_T = TypeVar("_T")

log = logging.getLogger("agent.service")


def _stream() -> TextIO | None:
    # faulthandler writes to a file descriptor; a replaced sys.stderr (pytest capture, a GUI host) may have none.
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return None


def arm(after_s: float) -> bool:
    """Exit the process (status 1, thread stacks on stderr) unless :func:`disarm` runs within ``after_s``.

    Returns False when no usable stderr exists (then nothing is armed).
    """
    stream = _stream()
    if stream is None:
        return False
    log.debug("agent.stall_exit_armed", extra={"after_s": after_s})
    faulthandler.dump_traceback_later(after_s, exit=True, file=stream)
    return True


def disarm() -> None:
    """Cancel a pending :func:`arm` (harmless when none is armed)."""
    faulthandler.cancel_dump_traceback_later()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` for a process entry point, then cancel any exit :func:`arm` set while it ran: once
    the loop has closed, the stop it guarded is over."""
    try:
        return asyncio.run(main)
    finally:
        disarm()
