"""``em-agent check`` with device.backend = 'openfibsem': the check connects and reads the demo's metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.commands.check_cmd import check_device
from agent.settings import load_settings

pytestmark = pytest.mark.usefixtures("openfibsem_demo")


def test_openfibsem_device_check_reads_the_microscope(tmp_path: Path) -> None:
    settings = load_settings(None, {"state_dir": str(tmp_path), "device": {"backend": "openfibsem"}})
    result = check_device(settings)
    assert result.ok, result.detail
    assert "DemoMicroscope" in result.detail
    assert "vacuum pumped" in result.detail


def test_openfibsem_device_check_fails_with_the_reason(tmp_path: Path) -> None:
    device = {"backend": "openfibsem", "openfibsem": {"manufacturer": "Zeiss"}}
    result = check_device(load_settings(None, {"state_dir": str(tmp_path), "device": device}))
    assert not result.ok
    assert "Zeiss" in result.detail
