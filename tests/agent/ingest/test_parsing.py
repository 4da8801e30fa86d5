"""Parser-side processing: batches keep going past a bad file, unchanged content is recognised by hash."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from agent.ingest.parsing import ParseBatch, ParseJob, parse_batch


def _batch(root: Path, *jobs: ParseJob) -> ParseBatch:
    return ParseBatch(
        jobs=jobs, watch_root=str(root), skip_near_grid_bar_holes=True, path_map=(), max_bytes=1 << 20
    )


def test_batch_outcomes_follow_the_jobs(tmp_path: Path) -> None:
    session = tmp_path / "Supervisor_1" / "EpuSession.dm"
    session.parent.mkdir()
    session.write_text("<not xml")
    digest = hashlib.sha256(session.read_bytes()).hexdigest()
    gone = ParseJob(str(tmp_path / "Supervisor_1" / "Metadata" / "GridSquare_1.dm"), None)
    ignored = ParseJob(str(tmp_path / "notes.txt"), None)
    broken = ParseJob(str(session), None)
    same = ParseJob(str(session), digest)
    outcomes = parse_batch(_batch(tmp_path, gone, ignored, broken, same))
    assert [o.path for o in outcomes] == [j.path for j in (gone, ignored, broken, same)]
    assert outcomes[0].skipped
    assert outcomes[0].record is None
    assert outcomes[1].skipped
    assert outcomes[1].info is None
    # A damaged file is recorded (failed, or retried as incomplete), never silently dropped.
    assert outcomes[2].incomplete or (
        outcomes[2].record is not None and outcomes[2].record.status == "failed"
    )
    assert outcomes[3].skipped
    assert outcomes[3].record is not None
    assert outcomes[3].record.content_hash == digest


def test_a_parser_process_does_not_load_the_http_client() -> None:
    # The entity-kind table holds request-spec builders but imports backend_client only when one is called.
    code = "import sys, agent.ingest.parsing; print(sorted(m for m in ('backend_client', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
