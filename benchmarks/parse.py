"""Parse throughput of ``converters`` next to the limit: bare ``lxml.etree.fromstring`` over the same bytes.

Two sets: the real EPU samples (``../shared/epu-samples``) and a large generated visit (``testbed.epu``
preset ``large`` by default, about 51k XML and .dm files, 630 MB; ``--preset medium`` for a quicker run; when the generator is unavailable, the samples replicated in a temporary
folder). Files are read into memory first, so both sides measure parsing only. Each measurement is the best
of ``--rounds`` rounds of process CPU time, with the bare and full parses interleaved so that load from
other processes hits both alike (on an idle machine CPU time equals wall time for this single thread).

Prints exactly one JSON line on stdout; progress goes to stderr. Target: ``ratio`` (ours / bare, files/s)
at least 1/3, for both sets. Also reported: the ratio per file kind of both sets, and the throughput of
``classify_path`` (run on every file event of a watched folder) over every path of the generated set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from converters import EpuPath, classify_path, parse_bytes

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "epu-samples"
TARGET = 1 / 3

Corpus = list[tuple[EpuPath, bytes]]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(root: Path) -> Corpus:
    """Every classified EPU file under ``root``, read into memory."""
    corpus: Corpus = []
    for path in sorted(root.rglob("*")):
        info = classify_path(path)
        if info is not None and path.is_file():
            corpus.append((info, path.read_bytes()))
    return corpus


def _time(fn: Callable[[EpuPath, bytes], object], corpus: Corpus) -> float:
    # CPU time of this process: on a shared machine wall time mostly measures the neighbours.
    start = time.process_time()
    for info, data in corpus:
        fn(info, data)
    return time.process_time() - start


def measure(corpus: Corpus, rounds: int) -> dict[str, Any]:
    """Best-of-``rounds`` throughput of bare lxml and of ``parse_bytes`` on ``corpus``."""

    def bare(info: EpuPath, data: bytes) -> object:
        return etree.fromstring(data)

    def ours(info: EpuPath, data: bytes) -> object:
        return parse_bytes(data, info)

    best_bare = best_ours = float("inf")
    for _ in range(rounds):
        best_bare = min(best_bare, _time(bare, corpus))
        best_ours = min(best_ours, _time(ours, corpus))
    files = len(corpus)
    megabytes = sum(len(data) for _, data in corpus) / 1e6
    return {
        "files": files,
        "megabytes": round(megabytes, 3),
        "files_per_s": round(files / best_ours, 1),
        "mb_per_s": round(megabytes / best_ours, 2),
        "lxml_files_per_s": round(files / best_bare, 1),
        "lxml_mb_per_s": round(megabytes / best_bare, 2),
        "ratio": round(best_bare / best_ours, 3),
    }


def classify_rate(paths: list[str], rounds: int) -> float:
    """Best-of-``rounds`` ``classify_path`` calls per second of CPU time over ``paths``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for path in paths:
            classify_path(path)
        best = min(best, time.process_time() - start)
    return round(len(paths) / best, 1)


def by_kind(corpus: Corpus, rounds: int) -> dict[str, float]:
    """Ratio per file kind (the mix decides the overall figure)."""
    kinds: dict[str, Corpus] = {}
    for info, data in corpus:
        kinds.setdefault(info.kind.value, []).append((info, data))
    return {kind: measure(items, rounds)["ratio"] for kind, items in sorted(kinds.items())}


def generated_corpus(preset: str, work: Path) -> tuple[Corpus, str]:
    """A large generated visit (testbed generator), or the samples replicated when it is unavailable."""
    try:
        from testbed.epu import generate  # optional: runs without the testbed too
    except ImportError as exc:
        _log(f"testbed.epu unavailable ({exc}); replicating the samples instead")
    else:
        start = time.perf_counter()
        generate(work / "visit", preset=preset, previews=False)
        _log(f"generated preset {preset!r} in {time.perf_counter() - start:.1f} s")
        return load(work / "visit"), f"testbed.epu preset {preset}"
    for copy in range(20):
        shutil.copytree(
            SAMPLES, work / f"copy{copy}", ignore=shutil.ignore_patterns("*.jpg", "*.txt", "*.md")
        )
    return load(work), "samples x20"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large", help="testbed.epu preset for the generated set")
    parser.add_argument("--rounds", type=int, default=3, help="best-of rounds per measurement")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"benchmark": "parse", "target_ratio": round(TARGET, 3)}
    if SAMPLES.is_dir():
        samples = load(SAMPLES)
        _log(f"samples: {len(samples)} files")
        result["samples"] = measure(samples, args.rounds)
        result["samples"]["ratio_by_kind"] = by_kind(samples, args.rounds)
    else:
        _log(f"samples not found at {SAMPLES}; skipped")
    with tempfile.TemporaryDirectory(prefix="em-agent-parse-bench-") as tmp:
        corpus, source = generated_corpus(args.preset, Path(tmp))
        _log(f"generated set ({source}): {len(corpus)} files")
        result["generated"] = {"source": source, **measure(corpus, args.rounds)}
        result["generated"]["ratio_by_kind"] = by_kind(corpus, args.rounds)
        paths = [str(path) for path in sorted(Path(tmp).rglob("*"))]
        result["generated"]["classify_paths"] = len(paths)
        result["generated"]["classify_paths_per_s"] = classify_rate(paths, args.rounds)
    ratios = [result[key]["ratio"] for key in ("samples", "generated") if key in result]
    result["meets_target"] = all(ratio >= TARGET for ratio in ratios)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
