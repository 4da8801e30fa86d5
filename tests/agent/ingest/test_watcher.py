"""Watcher: real watchdog observers on real folders; scan + watch miss nothing; observer choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from watchdog.observers.polling import PollingObserver

from agent.ingest.watcher import FileWatcher, choose_observer, is_network_path, scan_tree


async def _until(cond: object, within_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_scan_tree_lists_every_file(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    files = {tmp_path / "x.dm", tmp_path / "a" / "y.xml", tmp_path / "a" / "b" / "z.xml"}
    for f in files:
        f.write_text("1")
    assert set(scan_tree(tmp_path)) == {str(f) for f in files}


@pytest.mark.parametrize("mode", ["native", "polling"])
async def test_created_modified_moved_and_new_folders_are_reported(tmp_path: Path, mode: str) -> None:
    seen: set[str] = set()
    existing = tmp_path / "old.xml"
    existing.write_text("1")
    watcher = FileWatcher(tmp_path, seen.add, mode=mode, poll_interval_s=0.1)  # type: ignore[arg-type]
    await watcher.start()
    try:
        assert watcher.observer_kind == mode
        assert await watcher.scan() == 1
        created = tmp_path / "new.xml"
        created.write_text("2")
        tmp = tmp_path / "tmp.part"
        tmp.write_text("3")
        tmp.replace(tmp_path / "renamed.xml")
        # A whole folder moved in brings one event; its contents are found by a scan of the folder.
        outside = tmp_path.parent / (tmp_path.name + "_staging")
        (outside / "deep").mkdir(parents=True)
        (outside / "deep" / "inner.xml").write_text("4")
        outside.replace(tmp_path / "moved_in")
        expected = {
            str(existing),
            str(created),
            str(tmp_path / "renamed.xml"),
            str(tmp_path / "moved_in" / "deep" / "inner.xml"),
        }
        await _until(lambda: expected <= seen)
    finally:
        await watcher.stop()


async def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    watcher = FileWatcher(tmp_path / "absent", lambda _p: None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await watcher.start()


def test_observer_choice(tmp_path: Path) -> None:
    assert isinstance(choose_observer(tmp_path, "polling", 1.0), PollingObserver)
    assert not isinstance(choose_observer(tmp_path, "native", 1.0), PollingObserver)
    assert not is_network_path(tmp_path)
    assert is_network_path(Path("//server/share/visit"))


async def test_reading_files_brings_no_events(tmp_path: Path) -> None:
    # The parsers open and read every file: inotify's open / read-only close events must not come back as work.
    target = tmp_path / "a.xml"
    target.write_text("1")
    seen: list[str] = []
    watcher = FileWatcher(tmp_path, seen.append, mode="native")
    await watcher.start()
    try:
        for _ in range(3):
            assert target.read_text() == "1"
        await asyncio.sleep(0.3)
        assert seen == []
        target.write_text("2")  # a real change still comes through, coalesced per path
        await _until(lambda: str(target) in seen)
        # Coalescing is per delivery batch: under load the modify and close-write events may land in two.
        assert set(seen) == {str(target)}
        assert len(seen) <= 2
    finally:
        await watcher.stop()
