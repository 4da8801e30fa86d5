"""Saving acquired images confined to a root directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.devices.image_store import UnsafePathError, resolve_under, save_image
from agent.devices.semphony import AcquisitionConfig, ImagingDevice


@pytest.fixture
def acquired(sem: ImagingDevice) -> tuple[object, bytes]:
    result = sem.acquire(AcquisitionConfig(width=64, height=48, fov_um=20.0), download=True)
    assert result.image_bytes is not None
    return result, result.image_bytes


def test_saves_image_and_metadata(tmp_path: Path, acquired: tuple[object, bytes]) -> None:
    result, blob = acquired
    saved = save_image(tmp_path, result, blob, subdir="images/2024")  # type: ignore[arg-type]
    assert Path(saved.path).read_bytes() == blob
    assert saved.size_bytes == len(blob)
    assert saved.relative_path == f"images/2024/{saved.image_id}.png"
    assert saved.metadata["fov_um"] == 20.0
    assert json.loads(Path(saved.metadata_path).read_text())["width"] == 64
    assert json.loads(saved.model_dump_json())["image_id"] == saved.image_id
    with pytest.raises(FileExistsError):
        save_image(tmp_path, result, blob, subdir="images/2024")  # type: ignore[arg-type]
    assert not [p for p in Path(saved.path).parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "bad", ["../escape", "a/../../b", "/etc", "C:\\Windows", "..\\x", "a/.hidden", "a/b c", "", "a\x00b"]
)
def test_rejects_traversal(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        resolve_under(tmp_path, bad)


def test_rejects_symlink_escape(tmp_path: Path, acquired: tuple[object, bytes]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    result, blob = acquired
    with pytest.raises(UnsafePathError):
        save_image(root, result, blob, subdir="link")  # type: ignore[arg-type]
    with pytest.raises(UnsafePathError):
        save_image(root, result, blob, filename="../x.png")  # type: ignore[arg-type]
    assert list(outside.iterdir()) == []
