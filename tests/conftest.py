"""Shared fixtures: locations of the real EPU samples and of the RabbitMQ broker.

Tests that need ``../shared/epu-samples`` or a broker skip when they are absent, unless CI sets
``EM_AGENT_REQUIRE_SAMPLES=1`` / ``EM_AGENT_REQUIRE_AMQP=1``, in which case a missing resource fails the test.
Likewise OpenFIBSEM (the ``openfibsem`` extra) with ``EM_AGENT_REQUIRE_OPENFIBSEM=1``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn

import pytest

from testbed.toolenv import (
    EPUPLAYER_REQUIREMENTS,
    SMARTEM_REQUIREMENTS,
    ToolUnavailableError,
    ensure_tool_venv,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("EM_AGENT_SAMPLES_DIR", REPO_ROOT.parent / "shared" / "epu-samples"))


def _require(flag: str) -> bool:
    return os.environ.get(flag, "") not in ("", "0", "false", "no")


def skip_or_fail(flag: str, message: str) -> NoReturn:
    """Skip the test, or fail it when the ``EM_AGENT_REQUIRE_*`` switch ``flag`` is set (as CI sets them)."""
    if _require(flag):
        pytest.fail(f"{message} (required: {flag}=1)")
    pytest.skip(message)


def _tool_bin(flag: str, name: str, requirements: tuple[str, ...]) -> Path:
    try:
        return ensure_tool_venv(name, requirements)
    except ToolUnavailableError as exc:
        skip_or_fail(flag, f"{name} tool venv unavailable: {exc}")


@pytest.fixture(scope="session")
def smartem_tool_bin() -> Path:
    """``bin`` folder of the Python 3.12 venv holding the real SmartEM backend (``smartem-decisions``)."""
    return _tool_bin("EM_AGENT_REQUIRE_SMARTEM", "smartem", SMARTEM_REQUIREMENTS)


@pytest.fixture(scope="session")
def epuplayer_tool_bin() -> Path:
    """``bin`` folder of the Python 3.12 venv holding the real ``epuplayer`` (``smartem-epuplayer``)."""
    return _tool_bin("EM_AGENT_REQUIRE_EPUPLAYER", "epuplayer", EPUPLAYER_REQUIREMENTS)


@pytest.fixture(scope="session")
def epu_samples_dir() -> Path:
    """The real EPU sample tree; skips (or fails under EM_AGENT_REQUIRE_SAMPLES=1) when it is missing."""
    if not SAMPLES_DIR.is_dir():
        if _require("EM_AGENT_REQUIRE_SAMPLES"):
            pytest.fail(f"EPU samples required but not found at {SAMPLES_DIR}")
        pytest.skip(f"EPU samples not found at {SAMPLES_DIR}")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of a RabbitMQ broker; skips (or fails under EM_AGENT_REQUIRE_AMQP=1) when none is listening."""
    url = os.environ.get("EM_AGENT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1.0):
            pass
    except OSError:
        if _require("EM_AGENT_REQUIRE_AMQP"):
            pytest.fail("RabbitMQ broker required but not reachable on 127.0.0.1:5672")
        pytest.skip("RabbitMQ broker not reachable on 127.0.0.1:5672")
    return url


@pytest.fixture
def openfibsem_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenFIBSEM (``fibsem``) is importable, with its DemoMicroscope's artificial delays off; skips (or
    fails under EM_AGENT_REQUIRE_OPENFIBSEM=1) when the ``openfibsem`` extra is not installed."""
    try:
        import fibsem.microscopes.simulator  # noqa: F401
    except ImportError as exc:
        skip_or_fail("EM_AGENT_REQUIRE_OPENFIBSEM", f"OpenFIBSEM (fibsem) is not installed: {exc}")
    # OpenFIBSEM's own switch: its demo sleeps 1 s per stage move unless told not to.
    monkeypatch.setenv("FIBSEM_SIM_NO_DELAY", "1")
