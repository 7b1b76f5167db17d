"""Benchmark: reconstructing one 8-frame clip with VideoReconstructionPipeline (target: <= 2 s on 2 CPU cores).

    python benchmarks/bench_reconstruct.py --bundle assets/demo
    python benchmarks/bench_reconstruct.py --bundle assets/demo --steps 25 50 --start-timestep 200 400 --repeats 5

Prints the per-step breakdown (median over ``--repeats`` calls after one warm-up call) for each setting, one clip per
call (the app's case), torch threads as given (default 2). The denoising steps that run are those of the DDIM
schedule at or below the start timestep (e.g. 10 of 50 for t = 200), twice per step for classifier-free guidance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.models.sampling import make_scheduler, start_timesteps  # noqa: E402
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips  # noqa: E402

TARGET_SECONDS = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="assets/demo", help="a bundle folder (build-bundle --out)")
    parser.add_argument("--steps", type=int, nargs="+", help="num_inference_steps values (default: the bundle's)")
    parser.add_argument("--start-timestep", type=int, nargs="+", help="start timesteps (default: the bundle's)")
    parser.add_argument("--start", choices=("renoise", "invert"), help="default: the bundle's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = VideoReconstructionPipeline.from_pretrained(args.bundle)
    if args.start:
        pipeline.config = replace(pipeline.config, start=args.start)
    fmri = load_bundle_clips(args.bundle).fmri[:1]
    c = pipeline.config
    print(
        f"{args.bundle}: one clip of {pipeline.info.n_frames} frames at {pipeline.info.image_size} px, "
        f"{args.threads} torch threads, start {c.start}, median of {args.repeats}; target <= {TARGET_SECONDS} s"
    )
    steps_list = args.steps or [c.num_inference_steps]
    starts = args.start_timestep or [c.start_timestep]
    header = None
    worst = 0.0
    for steps in steps_list:
        for start in starts:
            pipeline.config = replace(pipeline.config, start_timestep=start)
            n_run = len(start_timesteps(make_scheduler(c.schedule), steps, start))
            pipeline(fmri, num_inference_steps=steps)  # warm-up
            runs = []
            for _ in range(args.repeats):
                begin = time.perf_counter()
                out = pipeline(fmri, num_inference_steps=steps)
                runs.append((time.perf_counter() - begin, out.timings))
            total = statistics.median(r[0] for r in runs)
            parts = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
            if header is None:
                header = f"{'steps':>5} {'t0':>4} {'run':>4} " + " ".join(f"{k:>9}" for k in parts) + f" {'total':>7}"
                print(header)
            print(
                f"{steps:>5} {start:>4} {n_run:>4} "
                + " ".join(f"{v:>9.3f}" for v in parts.values())
                + f" {total:>7.3f}"
            )
            worst = max(worst, total)
    print(f"slowest setting: {worst:.2f} s per clip ({'meets' if worst <= TARGET_SECONDS else 'misses'} the target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
