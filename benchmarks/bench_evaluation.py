"""Benchmark: evaluating 100 test clips under each protocol on CPU (target: <= 10 min per protocol on 2 cores).

    python benchmarks/bench_evaluation.py --bundle runs/bundle --backbones runs/backbones
    python benchmarks/bench_evaluation.py --data data/demo --backbones runs/backbones --protocol mind-animator --clips 20

With ``--bundle``, one evaluation is what ``python -m pipelines evaluate --bundle DIR --protocol NAME --limit 100``
does: reconstruct the bundle's first test clips with the full pipeline (no cache), then measure them under the
protocol. The table prints the reconstruction once and, per protocol, the measurement and the total.

With ``--data`` (metrics alone), the "reconstructions" are the shuffled reference (another test clip's ground truth):
the metrics' cost depends on the frames' size and count, not on their content. Each row times one metric alone on
the same clips (the n-way rows include the classifier passes; ``total`` is one full :func:`evaluate_videos` call
with every metric, reading the clips excluded). torch's threads as given (default 2).
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


def bench_bundle(bundle: str, backbones_dir: str, names: list[str], n_clips: int, threads: int) -> int:
    """Reconstruct + measure, as ``evaluate --bundle`` does, timed per protocol."""
    from pipelines.evaluation.evaluate import measure_protocol, reconstruct_condition
    from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips

    pipeline = VideoReconstructionPipeline.from_pretrained(bundle)
    clips = load_bundle_clips(bundle)
    n = min(n_clips, len(clips))
    start = time.perf_counter()
    videos = reconstruct_condition(pipeline, clips.fmri[:n], "full", batch_size=8).frames
    rebuild = time.perf_counter() - start
    category = None if clips.category is None else clips.category[:n]
    print(f"{n} test clips of {bundle}, {threads} torch threads; target total <= {TARGET_SECONDS:.0f} s per protocol")
    print(f"{'protocol':<14} {'reconstruct s':>13} {'measure s':>10} {'total s':>8}  target")
    worst = 0.0
    for name in names:
        protocol = load_protocol(name)
        backbones = load_evaluation_backbones(protocol, "demo", backbones_dir)
        start = time.perf_counter()
        measure_protocol(videos, clips.frames[:n], pipeline.info.fps, protocol, backbones, category)
        measure = time.perf_counter() - start
        total = rebuild + measure
        worst = max(worst, total)
        met = "met" if total <= TARGET_SECONDS else "MISSED"
        print(f"{name:<14} {rebuild:>13.1f} {measure:>10.1f} {total:>8.1f}  {met}", flush=True)
    print(f"slowest protocol: {worst:.1f} s ({'meets' if worst <= TARGET_SECONDS else 'misses'} the target)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="time reconstruction + measurement of a bundle's test clips")
    source.add_argument("--data", help="time the metrics alone on a CC2017-layout data set (the simulated subject)")
    parser.add_argument("--backbones", required=True, help="the demo tier's folder (train-backbones --out)")
    parser.add_argument("--protocol", default="all", help=f"one of {list(PROTOCOLS)} or 'all'")
    parser.add_argument("--clips", type=int, default=100, help="test clips per evaluation (the target is for 100)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
    if args.bundle:
        return bench_bundle(args.bundle, args.backbones, names, args.clips, args.threads)
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
