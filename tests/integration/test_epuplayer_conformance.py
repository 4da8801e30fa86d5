"""Conformance with the real ``epuplayer`` (``smartem-epuplayer==1.1.0``, the SmartEM developers' agent-testing tool).

Both directions, on a generated session written with partial writes and renames:

* a recording made by the real ``epuplayer record`` replays with ``em-agent testbed epu replay``: text files
  come out identical to the recorded folder, and the whole tree identical to what the real ``epuplayer replay``
  makes of the same recording;
* a recording made by our recorder replays with the real ``epuplayer replay`` into an identical folder.

Binary files are compared by the *name and size rule*: the real recorder (and ours, by default) replaces binary
content by a placeholder, so a replayed JPEG has the original's name and size but not its bytes.

The real recorder reads each file when its event arrives and diffs sizes, so two things it records wrongly are
kept out of the generated session: in-place rewrites (taken for appends or truncations; here every rewrite goes
through a rename) and files renamed away before it looked (here a rename waits 50 ms). One race remains in it: a
file that grows between its size check and its read is recorded inconsistently (content longer than its size, or an empty placeholder with the hash of the written bytes), and replays
longer than it was. The recording itself shows it (an event whose content length differs from its size): such
files are listed, must be few, and only there may the replay differ from the folder and report hash mismatches.

The real player runs from a Python 3.12 venv of its own (fixture ``epuplayer_tool_bin``; a missing venv skips,
or fails under ``EM_AGENT_REQUIRE_EPUPLAYER=1`` as CI sets it).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.backend.server import BackendServer
from testbed.epu import Manifest
from testbed.epu.generator import GeneratorConfig, SessionGenerator
from testbed.epu.recorder import Recorder
from testbed.epu.recording import BINARY_EXTENSIONS, folder_hashes
from tests.integration.test_ingest_support import REPO_ROOT, backend_problems

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Recorded:
    """A generated session, the folder it was written into, and a recording of the writing."""

    folder: Path
    recording: Path
    manifest: Manifest


def _config(**overrides: Any) -> GeneratorConfig:
    base: dict[str, Any] = {"preset": "small", "seed": 3, "partial_writes": 0.3, "partial_chunks": 2}
    return GeneratorConfig(**{**base, **overrides})


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _wait_quiet(log: Path, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """Wait until the real recorder has stopped printing (it prints one line per event it handles)."""
    deadline = time.monotonic() + timeout_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = log.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def real_recording(epuplayer_tool_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The real ``epuplayer record`` watching a folder while a session is generated into it."""
    base = tmp_path_factory.mktemp("real-record")
    watched, output, log = base / "watched", base / "real.tar.gz", base / "record.log"
    watched.mkdir()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(epuplayer_tool_bin / "epuplayer"), "record", str(watched), "-o", str(output)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl+C" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        config = _config(rename_writes=0.3, rename_rewrites=True, rename_pause_s=0.05)
        manifest = SessionGenerator(watched, config).run()
        _wait_quiet(log)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-3000:]
    assert output.is_file(), log.read_text()[-3000:]
    return Recorded(watched, output, manifest)


@pytest.fixture(scope="module")
def our_recording(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Our recorder watching a folder while a session is generated into it (rewrites in place included)."""
    base = tmp_path_factory.mktemp("our-record")
    watched = base / "watched"
    recorder = Recorder(watched)
    recorder.start()
    try:
        manifest = SessionGenerator(watched, _config(rename_writes=0.3)).run()
    finally:
        recording = recorder.stop()
    path = recording.save(base / "ours.tar.gz")
    return Recorded(watched, path, manifest)


def _events(recording: Path) -> list[dict[str, Any]]:
    with tarfile.open(recording) as archive:
        member = archive.extractfile("recording.json")
        assert member is not None
        events: list[dict[str, Any]] = json.loads(member.read())["events"]
    return events


def recorder_races(events: list[dict[str, Any]]) -> set[str]:
    """Paths (at any time) the real recorder got wrong by its own races, as the recording itself shows: content
    inconsistent with its recorded size (a file that grew between its size check and its read), a placeholder
    sized 0 with the hash of written bytes (its write then looks unchanged), a file moved from such a path, and
    a file moved from a path it never recorded (renamed before it looked)."""
    bad: set[str] = set()
    ever: set[str] = set()
    seen: set[str] = set()
    for event in events:
        if event["is_directory"]:
            continue
        kind, path, content = event["event_type"], event["src_path"], event.get("content")
        if kind in ("initial_file", "created", "modified"):
            seen.add(path)
        if kind == "moved" and path not in seen and event.get("dest_path"):
            bad.add(event["dest_path"])
            ever.add(event["dest_path"])
            seen.add(event["dest_path"])
            continue
        if kind == "moved" and event.get("dest_path"):
            seen.add(event["dest_path"])
        if kind in ("initial_file", "created", "modified") and event.get("is_placeholder"):
            # Sized while empty, hashed once written: the later write looks unchanged and is never recorded.
            if event.get("size") == 0 and event.get("content_hash") not in (None, _EMPTY_SHA256):
                bad.add(path)
                ever.add(path)
            else:
                bad.discard(path)
        elif kind in ("initial_file", "created", "modified"):
            if (
                content is not None
                and event.get("size") is not None
                and len(content.encode()) != event["size"]
            ):
                bad.add(path)
                ever.add(path)
            else:
                bad.discard(path)
        elif kind == "appended" and content is not None:
            expected = (event.get("operation_data") or {}).get("append_size")
            if expected is not None and len(content.encode()) != expected:
                bad.add(path)
                ever.add(path)
        elif kind == "moved" and event.get("dest_path"):
            if path in bad:
                bad.add(event["dest_path"])
                ever.add(event["dest_path"])
            else:
                bad.discard(event["dest_path"])
    return ever


def _binary(rel: str) -> bool:
    return rel.rsplit(".", 1)[-1].lower() in BINARY_EXTENSIONS


def tree_differences(source: Path, replayed: Path, exempt: set[str] | None = None) -> list[str]:
    """Text files byte for byte; binary files by name and size (placeholders); nothing missing or extra."""
    exempt = exempt or set()
    src = {p.relative_to(source).as_posix(): p for p in source.rglob("*") if p.is_file()}
    out = {p.relative_to(replayed).as_posix(): p for p in replayed.rglob("*") if p.is_file()}
    problems: list[str] = []
    for rel in sorted(set(src) | set(out)):
        if rel in exempt:
            continue
        if rel not in out:
            problems.append(f"missing after replay: {rel}")
        elif rel not in src:
            problems.append(f"not in the recorded folder: {rel}")
        elif _binary(rel):
            if src[rel].stat().st_size != out[rel].stat().st_size:
                problems.append(f"{rel}: size {out[rel].stat().st_size}, recorded {src[rel].stat().st_size}")
        elif src[rel].read_bytes() != out[rel].read_bytes():
            problems.append(f"{rel}: content differs")
    return problems


def _our_replay(recording: Path, target: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "testbed", "epu", "replay", str(recording), str(target), "--dev-mode"],
        capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, (json.loads(lines[-1]) if lines else {}), proc.stderr


def _real_replay(bin_dir: Path, recording: Path, target: Path, *mode: str) -> None:
    proc = subprocess.run(
        [str(bin_dir / "epuplayer"), "replay", str(recording), str(target), *(mode or ("--dev-mode",))],
        capture_output=True, text=True, timeout=120, env=_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_real_recording_replays_with_em_agent(
    real_recording: Recorded, epuplayer_tool_bin: Path, tmp_path: Path
) -> None:
    events = _events(real_recording.recording)
    # The real recorder records events on the watched folder itself (path "."), which used to be refused.
    assert any(e["src_path"] == "." for e in events)
    assert any(e["event_type"] == "moved" for e in events)
    assert any(e["event_type"] == "appended" for e in events)
    assert any(e["is_placeholder"] for e in events)
    races = recorder_races(events)
    files = {
        p.relative_to(real_recording.folder).as_posix()
        for p in real_recording.folder.rglob("*")
        if p.is_file()
    }
    affected = races & files
    print(f"real recorder races: {len(affected)} of {len(files)} files: {sorted(affected)}")
    # The real recorder's races must stay rare for the comparison to mean anything.
    assert len(affected) <= len(files) // 10, sorted(affected)

    rc, summary, stderr = _our_replay(real_recording.recording, tmp_path / "ours")
    assert rc == (1 if summary.get("hash_mismatches") else 0), stderr[-3000:]
    if not races:
        assert rc == 0, stderr[-3000:]
        assert summary["hash_mismatches"] == 0
    assert tree_differences(real_recording.folder, tmp_path / "ours", races) == []

    # Whatever the recording holds, em-agent's replay makes exactly what the real replayer makes of it.
    _real_replay(epuplayer_tool_bin, real_recording.recording, tmp_path / "real")
    assert folder_hashes(tmp_path / "ours") == folder_hashes(tmp_path / "real")


def test_our_recording_replays_with_the_real_epuplayer(
    our_recording: Recorded, epuplayer_tool_bin: Path, tmp_path: Path
) -> None:
    events = _events(our_recording.recording)
    assert any(e["event_type"] == "moved" for e in events)
    assert any(e["event_type"] in ("appended", "modified") for e in events)
    assert any(e["is_placeholder"] for e in events)
    _real_replay(epuplayer_tool_bin, our_recording.recording, tmp_path / "real")
    assert tree_differences(our_recording.folder, tmp_path / "real") == []


def test_real_player_replays_into_a_folder_that_em_agent_run_ingests(
    our_recording: Recorded, epuplayer_tool_bin: Path, tmp_path: Path
) -> None:
    """End to end: the real ``epuplayer replay`` writes a session into the folder that ``em-agent run`` watches;
    the testbed backend ends with exactly the recording's entities."""
    watch = tmp_path / "watch"
    watch.mkdir()
    with BackendServer(tmp_path / "backend.db") as server:
        env = {
            **_env(),
            "EM_AGENT_STATE_DIR": str(tmp_path / "state"),
            "EM_AGENT_LOGGING__STATUS_INTERVAL_S": "1",
        }
        log = tmp_path / "agent.log"
        with log.open("w") as sink:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--backend", server.url, "--watch", str(watch),
                 "--agent-id", "conformance"],
                stdout=subprocess.DEVNULL, stderr=sink, env=env, cwd=REPO_ROOT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while '"agent.ready"' not in log.read_text() and time.monotonic() < deadline:
                assert agent.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            _real_replay(epuplayer_tool_bin, our_recording.recording, watch, "--fast")
            deadline = time.monotonic() + 60
            problems = backend_problems(server.url, our_recording.manifest)
            while problems and time.monotonic() < deadline:
                time.sleep(1.0)
                problems = backend_problems(server.url, our_recording.manifest)
            assert problems == [], "\n".join(problems) + log.read_text()[-1500:]
        finally:
            agent.send_signal(signal.SIGTERM)
            rc = agent.wait(60)
        assert rc == 0, log.read_text()[-3000:]
