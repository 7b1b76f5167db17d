"""Benchmark: evaluating 100 test clips under each protocol on CPU (target: <= 10 min per protocol on 2 cores).

    python benchmarks/bench_evaluation.py --data data/demo --backbones runs/backbones
    python benchmarks/bench_evaluation.py --data data/demo --backbones runs/backbones --protocol mind-animator --clips 20

One evaluation = one method's reconstructions against the ground truth under one protocol. Until the demo bundle
exists (issue 5), the "reconstructions" are the shuffled reference (another test clip's ground truth): the metrics'
cost depends on the frames' size and count, not on their content. Each row times one metric alone on the same
clips (the n-way rows include the classifier passes; ``total`` is one full :func:`evaluate_videos` call with every
metric, reading the clips excluded), with torch's threads as given (default 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.evaluation.harness import evaluate_videos, iter_clips, load_evaluation_backbones  # noqa: E402
from pipelines.evaluation.protocols import PROTOCOLS, load_protocol  # noqa: E402
from pipelines.evaluation.references import BATCH, ground_truth_clips, reference_videos  # noqa: E402

TARGET_SECONDS = 600.0


def run(protocol, target, predicted, backbones) -> float:
    start = time.perf_counter()
    batches = zip(iter_clips(predicted, BATCH), iter_clips(target, BATCH), strict=True)
    evaluate_videos(batches, protocol, backbones, total=len(target), progress=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a CC2017-layout data set (the simulated subject)")
    parser.add_argument("--backbones", required=True, help="the demo tier's folder (train-backbones --out)")
    parser.add_argument("--protocol", default="all", help=f"one of {list(PROTOCOLS)} or 'all'")
    parser.add_argument("--clips", type=int, default=100, help="test clips per evaluation (the target is for 100)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
    print(
        f"{args.clips} test clips per evaluation, {args.threads} torch threads; target total <= {TARGET_SECONDS:.0f} s"
    )
    print(f"{'protocol':<14} {'metric':<10} {'seconds':>8}")
    worst = 0.0
    for name in names:
        protocol = load_protocol(name)
        target = ground_truth_clips(args.data, protocol, args.clips)
        predicted = reference_videos("shuffled", target)
        backbones = load_evaluation_backbones(protocol, "demo", args.backbones)
        for metric in protocol.metrics:
            alone = dataclasses.replace(protocol, metrics=(metric,))
            print(f"{name:<14} {metric:<10} {run(alone, target, predicted, backbones):>8.1f}", flush=True)
        total = run(protocol, target, predicted, backbones)
        worst = max(worst, total)
        print(
            f"{name:<14} {'total':<10} {total:>8.1f}  ({protocol.n_frames} frames at {protocol.resolution} px)",
            flush=True,
        )
    print(
        f"slowest protocol: {worst:.1f} s for {args.clips} clips ({'meets' if worst <= TARGET_SECONDS else 'misses'} the target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
