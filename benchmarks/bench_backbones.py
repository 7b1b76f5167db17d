"""Benchmark: training time of each demo-tier backbone, as a table (target: whole demo tier <= 60 min).

    python benchmarks/bench_backbones.py --data DIR                  # train the demo preset from scratch (~1 h)
    python benchmarks/bench_backbones.py --data DIR --steps-scale 0.05   # a shortened run (minutes)
    python benchmarks/bench_backbones.py --summary BACKBONES/backbones.json  # the table of an earlier run

DIR is a simulated subject (``python -m pipelines simulate --preset demo --out DIR``). Each role trains in a fresh
folder (nothing is resumed), in the dependency order of ``train-backbones``, on the device given (default CPU with
torch's default threads). The table has each role's steps, wall time and seconds per step; the last row is the
whole tier against the issue's 60-minute budget on 2 CPU cores. A shortened run (``--steps-scale`` < 1) times
every code path at a fraction of the steps and prints the full-length time extrapolated from its seconds per step
(marked as such; data preparation is not scaled).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.training.backbones.config import BackboneTrainingConfig  # noqa: E402
from pipelines.training.backbones.train_all import ORDER, load_presets, train_backbones  # noqa: E402

BUDGET_S = 3600.0  # the whole demo tier on 2 CPU cores


def scaled(training: BackboneTrainingConfig, factor: float) -> BackboneTrainingConfig:
    """Every role's steps (and validation interval) times ``factor``, at least 2 steps."""
    if not 0 < factor <= 1:
        raise ValueError(f"--steps-scale: expected a number in (0, 1], got {factor}.")
    changes = {}
    for role in ORDER:
        loop = getattr(training, role)
        steps = max(2, round(loop.steps * factor))
        changes[role] = dataclasses.replace(
            loop, steps=steps, eval_every=max(1, min(steps, round(loop.eval_every * factor))),
            warmup=min(loop.warmup, steps),
        )  # fmt: skip
    return dataclasses.replace(training, **changes)


def table(summary: dict, full_steps: dict[str, int] | None = None) -> str:
    """Markdown table of a ``backbones.json`` summary; with ``full_steps``, extrapolated full-length times too."""
    head = ["role", "steps", "batch", "wall_s", "s_per_step"] + (
        ["full_steps", "full_s (extrapolated)"] if full_steps else []
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = total_full = 0.0
    for role in ORDER:
        info = summary["roles"].get(role)
        if info is None:
            continue
        steps, wall = info["loop"]["steps"], float(info["wall_seconds"])
        total += wall
        cells = [role, str(steps), str(info["loop"]["batch_size"]), f"{wall:.0f}", f"{wall / steps:.2f}"]
        if full_steps:
            full = wall / steps * full_steps[role]
            total_full += full
            cells += [str(full_steps[role]), f"{full:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    last = ["**total**", "", "", f"{total:.0f}", ""] + (["", f"{total_full:.0f}"] if full_steps else [])
    lines.append("| " + " | ".join(last) + " |")
    reference = total_full if full_steps else total
    verdict = "within" if reference <= BUDGET_S else "OVER"
    lines.append(f"\nwhole tier: {reference / 60:.1f} min ({verdict} the {BUDGET_S / 60:.0f}-min budget"
                 f"{', extrapolated' if full_steps else ''}); device {summary.get('device', '?')}, "
                 f"{os.cpu_count()} CPU cores here")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="simulated subject to train on")
    source.add_argument("--summary", help="backbones.json of an earlier train-backbones run: print its table")
    parser.add_argument("--preset", default="demo", help="backbone preset (default demo)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="fraction of each role's steps (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", help="prepared-dataset cache (default $MINDREEL_CACHE)")
    parser.add_argument("--keep", help="keep the trained backbones in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.summary:
        print(table(json.loads(Path(args.summary).read_text())))
        return 0
    arch, training = load_presets(args.preset)
    run = scaled(training, args.steps_scale) if args.steps_scale != 1 else training
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mindreel-bench-backbones-"))
    if args.keep and (out / "backbones.json").exists():
        parser.error(
            f"--keep {out}: expected an empty folder (the benchmark never resumes), got one with backbones.json"
        )
    try:
        summary = train_backbones(args.data, out, arch, run, ORDER, device=args.device, cache_dir=args.cache_dir)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    full = {role: getattr(training, role).steps for role in ORDER} if args.steps_scale != 1 else None
    print(f"\ndemo-tier training benchmark (preset {args.preset}, steps x {args.steps_scale:g})\n")
    print(table(summary, full))
    return 0


if __name__ == "__main__":
    sys.exit(main())
