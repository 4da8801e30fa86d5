"""The ``openfibsem`` device backend: the Semphony control-server semantics over an OpenFIBSEM microscope,
in process.

OpenFIBSEM (the ``fibsem`` package, extra ``openfibsem``) is the open-source control library for Thermo Fisher
(AutoScript) and TESCAN FIB-SEMs, with a ``DemoMicroscope`` that needs no hardware. Its calls block; they run
on one dedicated worker thread with a limit per call, so neither the SDK's loop nor the agent's ever waits on
the microscope, and closing is bounded even while a call hangs.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from typing import Any

from agent.devices.control_core import ControlCoreBackend
from agent.devices.errors import SemphonyApiError
from agent.devices.openfibsem.config import OpenFibsemConfig
from agent.devices.openfibsem.control import OpenFibsemControlServer

__all__ = ["OpenFibsemBackend", "connect_microscope"]

log = logging.getLogger(__name__)

#: Ports OpenFIBSEM's own session setup uses for each manufacturer.
_DEFAULT_PORTS = {"Demo": 7520, "ThermoFisher": 7520, "Tescan": 8300}


def connect_microscope(config: OpenFibsemConfig) -> Any:
    """Build and connect the ``FibsemMicroscope`` the configuration names (blocking).

    Raises :class:`SemphonyApiError` (503) when OpenFIBSEM is not installed, 400 for a manufacturer it does
    not drive.
    """
    try:
        # OpenFIBSEM prints its configuration path when first imported; the agent's stdout is for its reports
        # (`em-agent check`), so the line goes to the debug log instead.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            from fibsem import manufacturers
            from fibsem.utils import load_microscope_configuration
        if printed.getvalue().strip():
            log.debug("device.openfibsem_import_output", extra={"output": printed.getvalue().strip()})
    except ImportError as exc:
        raise SemphonyApiError(
            f"device.backend = 'openfibsem' needs OpenFIBSEM: pip install 'em-agent[openfibsem]' ({exc})",
            status_code=503,
        ) from exc
    if config.configuration is not None and not config.configuration.is_file():
        raise SemphonyApiError(
            f"OpenFIBSEM configuration file not found: {config.configuration}", status_code=400
        )
    settings = load_microscope_configuration(
        None if config.configuration is None else str(config.configuration)
    )
    system = settings.system
    if config.manufacturer is not None:
        system.info.manufacturer = manufacturers.normalize_manufacturer(config.manufacturer)
    if config.ip_address is not None:
        system.info.ip_address = config.ip_address
    manufacturer = system.info.manufacturer
    microscope: Any
    if manufacturer == manufacturers.DEMO:
        from fibsem.microscopes.simulator import DemoMicroscope

        microscope = DemoMicroscope(system)
    elif manufacturer == manufacturers.THERMOFISHER:
        from fibsem.microscope import ThermoMicroscope

        microscope = ThermoMicroscope(system)
    elif manufacturer == manufacturers.TESCAN:
        from fibsem.microscopes.tescan import TescanMicroscope

        microscope = TescanMicroscope(system)
    else:
        raise SemphonyApiError(
            f"OpenFIBSEM manufacturer {manufacturer!r} is not supported here; use Demo, ThermoFisher or Tescan",
            status_code=400,
        )
    port = config.port if config.port is not None else _DEFAULT_PORTS[manufacturer]
    microscope.connect_to_microscope(ip_address=system.info.ip_address, port=port)
    return microscope


class OpenFibsemBackend(ControlCoreBackend):
    """A :class:`~agent.devices.backend.DeviceBackend` over OpenFIBSEM (``server`` exposes the control core).

    The microscope is connected at the first attachment, not here, so building the backend never blocks.
    """

    kind = "openfibsem"

    def __init__(
        self,
        config: OpenFibsemConfig | None = None,
        *,
        device_slug: str = "sem-001",
        connect: Callable[[], Any] | None = None,
    ) -> None:
        cfg = config or OpenFibsemConfig()
        # ``connect`` (blocking) returns a connected FibsemMicroscope; by default the configuration's.
        opener = connect if connect is not None else lambda: connect_microscope(cfg)
        self.server = OpenFibsemControlServer(opener, config=cfg, device_slug=device_slug)
        super().__init__(self.server)

    async def attach(
        self,
        run_id: int,
        session_id: int,
        *,
        device_slug: str | None,
        device_id: int | None,
        kind: str | None,
        force_close: bool = False,
    ) -> dict[str, Any]:
        """Connect to the microscope if needed, then attach (see :meth:`DeviceBackend.attach`)."""
        await self.server.connect()
        return await super().attach(
            run_id,
            session_id,
            device_slug=device_slug,
            device_id=device_id,
            kind=kind,
            force_close=force_close,
        )

    async def close(self) -> None:
        """Disconnect from the microscope and stop the worker (bounded; never waits for a hung call)."""
        await self.server.aclose()
