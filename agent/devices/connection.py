"""``ImagingConnection``: a long-lived synchronous handle on the microscope, for scripts and notebooks.

One client, one run (resumed by name), one session with guardrails, one attached :class:`ImagingDevice`. It is
opened lazily on first use, so a script starts even while the control server is down, and reopened after
:meth:`ImagingConnection.reset` (call it when the server lost the session: a 404/409 on the session). The
methods are synchronous and thread-safe. The daemon does not use it: it awaits the asynchronous facade through
:func:`agent.instructions.context.microscope_handle`.
"""

from __future__ import annotations

import logging
import threading

from agent.devices.errors import SemphonyApiError
from agent.devices.guardrails import ImagingGuardrails
from agent.devices.semphony.client import Run, SemphonyClient, Session
from agent.devices.semphony.systems import ImagingDevice

__all__ = ["ImagingConnection"]

_log = logging.getLogger(__name__)


class ImagingConnection:
    """Lazily opened run + guarded session + attached imaging device over ``client``."""

    def __init__(
        self,
        client: SemphonyClient,
        *,
        run_name: str = "em-agent",
        device_slug: str = "sem-001",
        guardrails: ImagingGuardrails | None = None,
        force_close: bool = True,
    ) -> None:
        self.client = client
        self.run_name = run_name
        self.device_slug = device_slug
        # The agent never drives the instrument without guardrails unless told to explicitly.
        self.guardrails = guardrails if guardrails is not None else ImagingGuardrails()
        self.force_close = force_close
        self._lock = threading.Lock()
        self._run: Run | None = None
        self._session: Session | None = None
        self._device: ImagingDevice | None = None

    def device(self) -> ImagingDevice:
        """The attached device, opening run, session and attachment if needed."""
        with self._lock:
            if self._device is None or self._session is None or self._session.closed:
                run = self.client.run(self.run_name)
                session = run.session(guardrails=self.guardrails).start()
                device = ImagingDevice(self.client, device_slug=self.device_slug)
                try:
                    # A previous agent process may still hold the device in a session it never closed.
                    device.attach(session, force_close=self.force_close)
                except Exception:
                    session.close()
                    raise
                self._run, self._session, self._device = run, session, device
            return self._device

    @property
    def session(self) -> Session | None:
        """The current session, if open."""
        return self._session

    def reset(self) -> None:
        """Forget the session (closing it if possible); the next :meth:`device` call opens a new one."""
        with self._lock:
            session, self._session, self._device = self._session, None, None
        if session is not None:
            try:
                session.close()
            except SemphonyApiError as exc:
                # The server may already have dropped the session; reopening is what matters.
                _log.info("closing the previous Semphony session failed: %s", exc)

    def close(self) -> None:
        """Close the session and the client (idempotent)."""
        self.reset()
        self.client.close()
