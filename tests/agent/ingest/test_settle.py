"""Settling: old files are ready at once, files being written wait, incomplete parses come back later."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agent.ingest.settle import Settler


def _settler(**kw: float) -> Settler:
    args = {"settle_time_s": 0.2, "retry_initial_s": 0.05, "retry_max_s": 0.2, "capacity": 3}
    args.update(kw)
    return Settler(
        settle_time_s=args["settle_time_s"],
        retry_initial_s=args["retry_initial_s"],
        retry_max_s=args["retry_max_s"],
        capacity=int(args["capacity"]),
    )


def _old_file(path: Path, text: str = "x") -> str:
    path.write_text(text)
    old = time.time() - 60
    os.utime(path, (old, old))
    return str(path)


def test_old_file_is_ready_on_first_look(tmp_path: Path) -> None:
    s = _settler()
    p = _old_file(tmp_path / "a.xml")
    assert s.offer(p)
    assert s.poll() == [p]
    assert len(s) == 0


async def test_fresh_file_waits_until_stable(tmp_path: Path) -> None:
    s = _settler()
    p = tmp_path / "b.xml"
    p.write_text("<a")
    assert s.offer(str(p))
    assert s.poll() == []
    await asyncio.sleep(0.1)
    with p.open("a") as f:
        f.write("/>")  # still being written: the clock restarts
    await asyncio.sleep(0.12)
    assert s.poll() == []
    deadline = time.monotonic() + 2
    ready: list[str] = []
    while not ready and time.monotonic() < deadline:
        await s.wait(0.5)
        ready = s.poll()
    assert ready == [str(p)]


def test_capacity_bounds_memory(tmp_path: Path) -> None:
    s = _settler(capacity=2)
    paths = [_old_file(tmp_path / f"{i}.xml") for i in range(3)]
    assert s.offer(paths[0])
    assert s.offer(paths[1])
    assert not s.has_room
    assert not s.offer(paths[2])
    assert s.offer(paths[0])  # already held: accepted without growing
    assert len(s) == 2


async def test_incomplete_parse_is_retried_with_backoff(tmp_path: Path) -> None:
    s = _settler()
    p = _old_file(tmp_path / "c.xml")
    s.offer(p)
    assert s.poll() == [p]
    assert s.retry_later(p) == 0.05
    assert s.retrying == 1
    assert s.poll() == []
    await asyncio.sleep(0.07)
    assert s.poll() == [p]
    assert s.retry_later(p) == 0.1
    assert s.retry_later(p) == 0.2  # third failure
    assert s.retry_later(p) == 0.2  # capped
    s.succeeded(p)
    assert s.retrying == 0


def test_deleted_file_is_forgotten(tmp_path: Path) -> None:
    s = _settler()
    p = _old_file(tmp_path / "d.xml")
    s.offer(p)
    Path(p).unlink()
    assert s.poll() == []
    assert len(s) == 0
    assert s.next_due() is None


def test_poll_stat_reports_what_it_observed(tmp_path: Path) -> None:
    s = _settler()
    p = _old_file(tmp_path / "b.xml", "12345")
    s.offer(p)
    st = Path(p).stat()
    assert s.poll_stat() == [(p, 5, st.st_mtime_ns)]
