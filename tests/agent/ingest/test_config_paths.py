"""Paths the agent sends are absolute: a relative watch folder or path-map target is made absolute at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ingest.config import IngestConfig


def test_relative_watch_dir_and_path_map_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = IngestConfig(watch_dir=Path("epu"), path_map={"X:\\": Path("mnt/x")})
    assert config.watch_dir == tmp_path / "epu"
    assert config.path_map == {"X:\\": tmp_path / "mnt" / "x"}


def test_absolute_paths_are_kept_as_given(tmp_path: Path) -> None:
    # absolute(), not resolve(): a symlinked share keeps the name the operator configured.
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    config = IngestConfig(watch_dir=link)
    assert config.watch_dir == link
