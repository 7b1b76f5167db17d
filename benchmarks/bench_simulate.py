"""Benchmark: wall time of `simulate` per preset (and optionally of `inspect` on the result), as a table.

    python benchmarks/bench_simulate.py                    # tiny and demo (about 2 min on 2 cores)
    python benchmarks/bench_simulate.py --presets tiny --inspect

Targets from the data-layer issue: tiny < 30 s, demo < 10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_config, preset_path  # noqa: E402
from pipelines.data.twin.simulate import TwinConfig, simulate  # noqa: E402

TARGETS = {"tiny": 30.0, "demo": 600.0, "cc2017": None}


def folder_size(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "demo"], choices=sorted(TARGETS))
    parser.add_argument("--inspect", action="store_true", help="also time `inspect` and print its key numbers")
    parser.add_argument("--keep", help="keep the simulated subjects under this folder")
    args = parser.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mindreel-bench-"))
    rows = []
    try:
        for preset in args.presets:
            config = load_config(TwinConfig, preset_path("twin", preset))
            out = root / preset
            start = time.perf_counter()
            simulate(config, out, seed=0, preset=preset)
            seconds = time.perf_counter() - start
            row = {"preset": preset, "simulate_s": seconds, "target_s": TARGETS[preset], "size_mb": folder_size(out)}
            if args.inspect:
                from pipelines.data.inspect import inspect

                start = time.perf_counter()
                summary = inspect(out, cache_dir=root / "cache")
                row["inspect_s"] = time.perf_counter() - start
                row |= {
                    k: summary[k]
                    for k in ("n_train_clips", "n_test_clips", "selected_in_encoding_rois", "encoding_r_median")
                }
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nsimulate benchmark ({os.cpu_count()} CPU cores)\n")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(keys) + " | ok |")
    print("|" + "---|" * (len(keys) + 1))
    for row in rows:
        cells = [f"{row.get(k):.3g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        ok = row["target_s"] is None or row["simulate_s"] < row["target_s"]
        print("| " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
