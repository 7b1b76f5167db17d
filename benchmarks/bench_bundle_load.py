"""Benchmark: opening a bundle (target: <= 10 s on 2 CPU cores, issue #9).

    python benchmarks/bench_bundle_load.py [--bundle assets/demo] [--repeats 3]

Each repeat is a new Python process (what a user starting the app pays): importing the pipeline, then
``VideoReconstructionPipeline.from_pretrained`` (which checks every file's SHA-256 and builds the models), then
reading the test clips. Prints each part's median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0

CHILD = """
import json, sys, time
begin = time.perf_counter()
import torch
torch.set_num_threads({threads})
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips
imported = time.perf_counter()
pipeline = VideoReconstructionPipeline.from_pretrained({bundle!r})
opened = time.perf_counter()
clips = load_bundle_clips({bundle!r})
done = time.perf_counter()
print(json.dumps({{"import": imported - begin, "from_pretrained": opened - imported, "test clips": done - opened,
                  "total": done - begin, "n_clips": len(clips)}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "assets" / "demo"), help="a bundle folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    code = CHILD.format(bundle=str(Path(args.bundle).resolve()), threads=args.threads)
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"error: opening {args.bundle} failed:\n{done.stderr}", file=sys.stderr)
            return 1
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    size = sum(p.stat().st_size for p in Path(args.bundle).rglob("*") if p.is_file()) / 2**20
    print(f"{args.bundle} ({size:.1f} MiB, {runs[0]['n_clips']} test clips), {args.threads} torch threads, median of "
          f"{args.repeats} new processes; target <= {TARGET_SECONDS:.0f} s")  # fmt: skip
    print(f"{'part':<16} {'seconds':>8}")
    for part in ("import", "from_pretrained", "test clips", "total"):
        print(f"{part:<16} {statistics.median(r[part] for r in runs):>8.2f}")
    total = statistics.median(r["total"] for r in runs)
    print(f"opening the bundle: {total:.2f} s ({'meets' if total <= TARGET_SECONDS else 'misses'} the target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
