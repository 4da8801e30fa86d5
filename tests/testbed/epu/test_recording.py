"""epuplayer-compatible recordings: a live recording replays into an identical folder."""

from __future__ import annotations

import argparse
import json
import tarfile
import threading
import time
from pathlib import Path

import pytest

from testbed.cli_epu import register
from testbed.epu import GeneratorConfig, SessionGenerator
from testbed.epu.recorder import Recorder
from testbed.epu.recording import (
    EPUEvent,
    Recording,
    RecordingError,
    folder_hashes,
    sha256_hex,
)
from testbed.epu.replayer import Replayer


def _not_temp(rel: str) -> bool:
    return rel.endswith(".part")  # rename-writes' temporary files vanish by design


def test_recorder_captures_a_live_session_that_replays_identically(tmp_path: Path) -> None:
    source = tmp_path / "epu"
    source.mkdir()
    (source / "preexisting.txt").write_text("from before the recording\n")
    recorder = Recorder(source, skip_binary_content=False)
    recorder.start()
    config = GeneratorConfig(
        seed=9, partial_writes=0.3, rename_writes=0.2, disorder=0.2, partial_pause_s=0.002
    )
    SessionGenerator(source, config).run()
    time.sleep(0.2)
    recording = recorder.stop()
    kinds = {e.event_type for e in recording.events}
    assert {"initial_file", "created"} <= kinds
    assert "appended" in kinds or "modified" in kinds  # partial writes and rewrites were captured
    archive = recording.save(tmp_path / "session.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        document = json.loads(tar.extractfile("recording.json").read())  # type: ignore[union-attr]
    assert "recording.json" in names
    assert any(n.startswith("chunks/chunk_") for n in names)
    assert set(document["metadata"]) >= {"recorded_at", "watch_dir", "total_events", "version", "platform"}
    assert document["metadata"]["total_events"] == len(document["events"])
    assert all(set(event) <= set(EPUEvent.model_fields) for event in document["events"])

    loaded = Recording.load(archive)
    target = tmp_path / "replayed"
    result = Replayer(loaded, target, speed=1000.0, max_delay=0.0).replay()
    assert result.hash_mismatches == []
    assert folder_hashes(target, ignore=_not_temp) == folder_hashes(source, ignore=_not_temp)


def test_replay_timing_speed_and_cap(tmp_path: Path) -> None:
    recording = Recording.new(tmp_path)
    for i, ts in enumerate((100.0, 102.0, 110.0)):
        recording.events.append(
            EPUEvent(timestamp=ts, event_type="created", src_path=f"a/f{i}.xml", content="x")
        )
    slept: list[float] = []
    Replayer(recording, tmp_path / "out", speed=2.0, max_delay=3.0, sleep=slept.append).replay()
    assert slept == [1.0, 3.0]
    slept.clear()
    Replayer(recording, tmp_path / "out2", burst=True, sleep=slept.append).replay()
    assert slept == [0.001, 0.001, 0.001]


def test_replay_applies_appends_truncates_moves_and_placeholders(tmp_path: Path) -> None:
    recording = Recording.new(tmp_path)
    chunk = recording.add_chunk(b"\x00\x01binary")
    events = [
        EPUEvent(timestamp=1, event_type="initial_dir", src_path="d", is_directory=True),
        EPUEvent(timestamp=2, event_type="created", src_path="d/a.xml", content="<a>"),
        EPUEvent(timestamp=3, event_type="appended", src_path="d/a.xml", content="</a>", file_position=3),
        EPUEvent(timestamp=4, event_type="created", src_path="d/b.bin", binary_chunk_id=chunk),
        EPUEvent(timestamp=5, event_type="truncated", src_path="d/b.bin", operation_data={"new_size": 2}),
        EPUEvent(timestamp=6, event_type="moved", src_path="d/b.bin", dest_path="e/c.bin"),
        EPUEvent(timestamp=7, event_type="created", src_path="d/p.jpg", is_placeholder=True, size=4),
    ]
    recording.events.extend(events)
    recording.save(tmp_path / "r.tar.gz")
    target = tmp_path / "out"
    result = Replayer(
        Recording.load(tmp_path / "r.tar.gz"), target, burst=True, sleep=lambda _s: None
    ).replay()
    assert result.applied == len(events)
    assert not result.warnings
    assert (target / "d/a.xml").read_text() == "<a></a>"
    assert (target / "e/c.bin").read_bytes() == b"\x00\x01"
    assert not (target / "d/b.bin").exists()
    assert (target / "d/p.jpg").read_bytes() == b"\x00" * 4


def test_bad_recordings_are_rejected(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.json"
    legacy.write_text(
        json.dumps({"metadata": {"recorded_at": "x", "watch_dir": "/w"}, "events": [{"bogus": 1}]})
    )
    with pytest.raises(RecordingError, match="invalid recording"):
        Recording.load(legacy)
    escaping = Recording.new(tmp_path)
    escaping.events.append(EPUEvent(timestamp=0, event_type="created", src_path="../evil.txt", content="x"))
    with pytest.raises(RecordingError, match="escapes"):
        Replayer(escaping, tmp_path / "out").replay()
    assert not (tmp_path / "evil.txt").exists()


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="em-agent testbed")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_generate_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _cli()
    args = parser.parse_args(
        ["epu", "generate", str(tmp_path / "visit"), "--seed", "2", "--quiet", "--no-previews"]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entities"]["micrograph"] == 120
    assert (tmp_path / "visit" / "manifest.json").is_file()

    recording = Recording.new(tmp_path)
    recording.events.append(EPUEvent(timestamp=0, event_type="created", src_path="x/y.xml", content="<y/>"))
    recording.save(tmp_path / "r.tar.gz")
    args = parser.parse_args(
        ["epu", "replay", str(tmp_path / "r.tar.gz"), str(tmp_path / "out"), "--dev-mode"]
    )
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["applied"] == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["epu", "generate", str(tmp_path / "v2"), "--preset", "huge"])


def test_cli_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "EpuSession.dm").write_text("<EpuSessionXml/>")

    def later() -> None:
        (watched / "Metadata").mkdir()
        (watched / "Metadata/x.dm").write_text("<x/>")

    timer = threading.Timer(0.2, later)
    timer.start()
    args = _cli().parse_args(
        ["epu", "record", str(watched), "-o", str(tmp_path / "rec.tar.gz"), "--duration", "1.0"]
    )
    assert args.func(args) == 0
    timer.join()
    assert json.loads(capsys.readouterr().out)["events"] >= 2
    replayed = tmp_path / "replayed"
    Replayer(Recording.load(tmp_path / "rec.tar.gz"), replayed, burst=True).replay()
    assert folder_hashes(replayed) == folder_hashes(watched)


def _legacy(tmp_path: Path, events: list[dict[str, object]]) -> Path:
    path = tmp_path / "recording.json"
    path.write_text(json.dumps({"metadata": {"recorded_at": "x", "watch_dir": "/w"}, "events": events}))
    return path


def test_unknown_event_kinds_and_fields_are_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _legacy(
        tmp_path,
        [
            {"timestamp": 0, "event_type": "created", "src_path": "a", "is_directory": True},
            {
                "timestamp": 1,
                "event_type": "created",
                "src_path": "a/x.xml",
                "content": "<x/>",
                "patch_info": {},
            },
            {"timestamp": 2, "event_type": "patched", "src_path": "a/x.xml", "content": "zz"},
            {"timestamp": 3, "event_type": "created", "src_path": "a/y.xml", "content": "<y/>"},
        ],
    )
    recording = Recording.load(source)
    assert [e.src_path for e in recording.events] == ["a", "a/x.xml", "a/y.xml"]
    assert recording.skipped_events == 1
    assert recording.warnings == [
        "unknown event field 'patch_info' ignored (1 event(s))",
        "unknown event kind 'patched': 1 event(s) skipped",
    ]
    args = _cli().parse_args(["epu", "replay", str(source), str(tmp_path / "out"), "--dev-mode"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["applied"], summary["skipped"], summary["warnings"]) == (3, 1, 2)
    assert "warning: unknown event kind 'patched'" in captured.err
    assert (tmp_path / "out/a/x.xml").read_text() == "<x/>"
    # A known field with a wrong type is still an error, named.
    with pytest.raises(RecordingError, match="event 0"):
        Recording.load(_legacy(tmp_path, [{"timestamp": "soon", "event_type": "created", "src_path": "a"}]))


def test_events_on_the_recorded_folder_itself_apply_to_the_replay_folder(tmp_path: Path) -> None:
    """epuplayer's recorder records the watched folder's own directory events with path '.'."""
    recording = Recording.new(tmp_path)
    recording.events += [
        EPUEvent(timestamp=0, event_type="modified", src_path=".", is_directory=True),
        EPUEvent(timestamp=0, event_type="created", src_path="./m.xml", content="<m/>"),
        EPUEvent(timestamp=0, event_type="modified", src_path=".", is_directory=True),
        EPUEvent(timestamp=0, event_type="deleted", src_path=".", is_directory=True),
        EPUEvent(timestamp=0, event_type="moved", src_path=".tmp", dest_path="gone.xml"),
    ]
    result = Replayer(recording, tmp_path / "out", burst=True, sleep=lambda _: None).replay()
    assert (tmp_path / "out/m.xml").read_text() == "<m/>"
    assert result.applied == 5
    assert result.warnings == [
        "deleted event on the recorded folder itself not applied",
        ".tmp: moved to gone.xml but never recorded",
    ]
    # Only writes outside the target are refused.
    for bad in ("../evil.xml", "/etc/evil.xml", "a/../../evil.xml", "C:/evil.xml"):
        escaping = Recording.new(tmp_path)
        escaping.events.append(EPUEvent(timestamp=0, event_type="created", src_path=bad, content="x"))
        with pytest.raises(RecordingError, match="escapes"):
            Replayer(escaping, tmp_path / "out2").replay()
    assert not (tmp_path / "evil.xml").exists()


def test_placeholders_are_not_hash_checked(tmp_path: Path) -> None:
    recording = Recording.new(tmp_path)
    digest = sha256_hex(b"real jpeg bytes")
    recording.events += [
        EPUEvent(
            timestamp=0,
            event_type="created",
            src_path="p.jpg",
            size=0,
            is_placeholder=True,
            content_hash=sha256_hex(b""),
        ),
        EPUEvent(
            timestamp=0,
            event_type="modified",
            src_path="p.jpg",
            size=15,
            is_placeholder=True,
            content_hash=digest,
        ),
        EPUEvent(
            timestamp=0,
            event_type="created",
            src_path="t.xml",
            content="<t/>",
            content_hash=sha256_hex(b"<x/>"),
        ),
    ]
    result = Replayer(recording, tmp_path / "out", burst=True, sleep=lambda _: None).replay()
    assert (tmp_path / "out/p.jpg").read_bytes() == b"\x00" * 15
    assert result.hash_mismatches == ["t.xml"]  # a text file is checked; the placeholder is not
