"""Benchmark: write a generated EPU visit at full speed (default: the ``large`` preset, about 100k files).

Target (issue 5): ``large`` in under 2 minutes on the 2-core reference machine. Prints one JSON line on
stdout;
progress goes to stderr. Usage: ``python benchmarks/generate.py [--preset large] [--seed 0] [--out DIR]
[--keep]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from testbed.epu.generator import GeneratorConfig, SessionGenerator, WriteEvent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the output folder")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="epu-bench-"))
    try:
        t0 = time.monotonic()
        generator = SessionGenerator(out, GeneratorConfig(preset=args.preset, seed=args.seed))
        planned = time.monotonic() - t0
        size = 0

        def progress(event: WriteEvent) -> None:
            nonlocal size
            size += event.size
            if (event.index + 1) % 10000 == 0:
                print(
                    f"{event.index + 1}/{event.total} writes, {time.monotonic() - t0:.1f} s", file=sys.stderr
                )

        manifest = generator.run(progress)
        total = time.monotonic() - t0
        result = {
            "benchmark": "generate",
            "preset": args.preset,
            "files": manifest.total_files,
            "writes": generator.total,
            "bytes_written": size,
            "plan_s": round(planned, 3),
            "total_s": round(total, 3),
            "files_per_s": round(manifest.total_files / total, 1),
            "target_s": 120.0,
            "within_target": total < 120.0 if args.preset == "large" else None,
            "entities": manifest.expected_counts().as_dict(),
        }
        print(json.dumps(result))
        return 0
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
