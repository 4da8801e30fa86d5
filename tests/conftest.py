"""Shared fixtures and the skip policy: a missing optional dependency skips a test locally and fails it in CI.

Every such skip goes through :func:`skip_or_fail` (or :func:`import_optional`, built on it) with an
``EM_AGENT_REQUIRE_*`` switch; ``.ci/run`` exports every switch, so in CI nothing that should run is skipped.
``tests/test_skip_policy.py`` enforces this. The switches:

* ``EM_AGENT_REQUIRE_SAMPLES``: the real EPU samples in ``../shared/epu-samples``;
* ``EM_AGENT_REQUIRE_REFERENCE_DOCS``: the reference documents in ``../shared/docs``;
* ``EM_AGENT_REQUIRE_AMQP``: a RabbitMQ broker on 127.0.0.1:5672, its tools, and ``pika`` (the ``amqp`` extra);
* ``EM_AGENT_REQUIRE_OPENFIBSEM``: OpenFIBSEM (the ``openfibsem`` extra);
* ``EM_AGENT_REQUIRE_TORCH``: ``torch`` (the ``autofocus`` extra);
* ``EM_AGENT_REQUIRE_SYSTEMD``: ``systemd-analyze``;
* ``EM_AGENT_REQUIRE_PYINSTALLER``: PyInstaller (the ``dev`` extra);
* ``EM_AGENT_REQUIRE_SMARTEM``, ``EM_AGENT_REQUIRE_EPUPLAYER``: the real SmartEM backend and ``epuplayer`` tool
  venvs.

The project's own modules are never optional: tests import them, and a broken import is an error.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from types import ModuleType
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


def skip_or_fail(flag: str, message: str, *, module_level: bool = False) -> NoReturn:
    """Skip the test, or fail it when the ``EM_AGENT_REQUIRE_*`` switch ``flag`` is set (as CI sets them).

    ``module_level``: called while a test module is imported; the skip (or failure) covers the whole module.
    """
    if _require(flag):
        pytest.fail(f"{message} (required: {flag}=1)", pytrace=False)
    # skip-policy: the one place a missing dependency is skipped, behind its switch
    pytest.skip(f"{message} (set {flag}=1 to make this a failure)", allow_module_level=module_level)


def import_optional(module: str, flag: str, *, module_level: bool = True) -> ModuleType:
    """Import the optional third-party ``module``, or :func:`skip_or_fail` with ``flag`` when it is missing.

    Module level by default: a test module calls it at import time, as it would ``pytest.importorskip``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(flag, f"{module} is not installed: {exc}", module_level=module_level)


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
        skip_or_fail("EM_AGENT_REQUIRE_SAMPLES", f"EPU samples not found at {SAMPLES_DIR}")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of a RabbitMQ broker; skips (or fails under EM_AGENT_REQUIRE_AMQP=1) when none is listening."""
    url = os.environ.get("EM_AGENT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1.0):
            pass
    except OSError:
        skip_or_fail("EM_AGENT_REQUIRE_AMQP", "RabbitMQ broker not reachable on 127.0.0.1:5672")
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
