"""The real SmartEM backend for the ``tests/smartem`` suite: one per test session, emptied between tests.

``real_smartem`` starts :class:`testbed.smartem_real.RealSmartEM` once (about 15 s); ``smartem`` hands it to a
test with every data table emptied first, so tests do not depend on each other. Where the backend cannot start
(no Python 3.12 tool venv, no PostgreSQL or RabbitMQ, a failing start), the tests skip, or fail under
``EM_AGENT_REQUIRE_SMARTEM=1`` as CI sets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.smartem_real import RealSmartEM, ServiceUnavailableError
from tests.conftest import skip_or_fail


@pytest.fixture(scope="session")
def real_smartem(smartem_tool_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSmartEM]:
    """The real SmartEM backend on loopback for the whole test session (shared: do not stop it)."""
    backend = RealSmartEM(smartem_tool_bin, tmp_path_factory.mktemp("real-smartem"))
    try:
        backend.start()
    except ServiceUnavailableError as exc:
        skip_or_fail("EM_AGENT_REQUIRE_SMARTEM", f"the real SmartEM backend cannot start: {exc}")
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture
def smartem(real_smartem: RealSmartEM) -> Iterator[RealSmartEM]:
    """The shared real backend with its data tables emptied, its API running and default token lifetime."""
    if real_smartem.api_pid is None:
        real_smartem.start_api()
    real_smartem.reset_data()
    lifetime = real_smartem.oidc.token_lifetime_s
    yield real_smartem
    real_smartem.oidc.token_lifetime_s = lifetime
