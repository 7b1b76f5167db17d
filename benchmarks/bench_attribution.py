"""Benchmark: attribution time for one clip per decoder on CPU (targets: IntegratedGradients <= 3 s, Saliency <= 0.3 s).

The pattern method (Saliency's gradient times the training inputs' covariance) is held to Saliency's target: it is
the interactive map too. Its covariance comes from 1,180 random training inputs, the demo training split's size.

    python benchmarks/bench_attribution.py                      # decoders of the demo architecture, random weights
    python benchmarks/bench_attribution.py --decoders runs/decoders   # trained decoders (same sizes, same timing)

The architectures are the demo config's (4,500 voxels; CLIP width 128; 8 latents of 8x16x16; 32x32 flow grid;
3-TR encoder windows of 32-voxel tokens); timing does not depend on the weights, so without ``--decoders`` they are
random. Each row: one clip, the decoder's objective of brainviz.attribution, the median of ``--repeats`` runs after
one warm-up, with torch's threads as given (default 2, the issue's 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainviz.attribution import InputCovariance, attribute, decoder_objective  # noqa: E402
from pipelines.models.brainnrds import FlowDecoder, FlowDecoderConfig  # noqa: E402
from pipelines.models.mind_animator import (  # noqa: E402
    ConsistencyMotionGenerator,
    MotionGeneratorConfig,
    SemanticDecoder,
    SemanticDecoderConfig,
    StructureDecoder,
    StructureDecoderConfig,
)
from pipelines.models.neurocine import FMRIEncoder, FMRIEncoderConfig  # noqa: E402
from pipelines.models.registry import DECODERS  # noqa: E402

TARGETS = {"saliency": 0.3, "integrated_gradients": 3.0, "pattern": 0.3}
N_TRAIN = 1180  # training clips of the demo subject (the covariance's samples)
N_VOXELS, EMBED, LATENT, N_FRAMES, GRID, N_FLOWS, IMAGE = 4500, 128, (8, 16, 16), 8, 32, 3, 64


def demo_models(decoders: str | None) -> dict[str, torch.nn.Module]:
    """The five decoders: loaded from ``decoders`` when given, else the demo architecture with random weights."""
    if decoders:
        return {name: cls.from_pretrained(Path(decoders) / name) for name, cls in DECODERS.items()}
    torch.manual_seed(0)
    flow = FlowDecoder(FlowDecoderConfig(n_voxels=N_VOXELS, grid_size=GRID, image_size=IMAGE, n_flows=N_FLOWS))
    flow.codebook.fit(np.random.default_rng(0).standard_normal((4000, 2)), seed=0)
    return {
        "semantic": SemanticDecoder(SemanticDecoderConfig(n_voxels=N_VOXELS, embed_dim=EMBED, token_dim=EMBED)),
        "structure": StructureDecoder(StructureDecoderConfig(n_voxels=N_VOXELS, latent_shape=LATENT)),
        "motion": ConsistencyMotionGenerator(MotionGeneratorConfig(n_voxels=N_VOXELS, latent_shape=LATENT)),
        "flow": flow,
        "fmri-encoder": FMRIEncoder(FMRIEncoderConfig(n_voxels=N_VOXELS, patch_size=32, depth=2, embed_dim=EMBED)),
    }


def one_clip(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(fMRI input, reference, held-fixed input) of one random clip."""
    if name in ("semantic", "structure", "motion"):
        x = rng.standard_normal((1, N_VOXELS))
    else:
        x = rng.standard_normal((1, 5 if name == "flow" else 3, N_VOXELS))
    if name in ("semantic", "fmri-encoder"):
        return x, rng.standard_normal((1, EMBED)), None
    if name == "structure":
        return x, rng.standard_normal((1, *LATENT)), None
    if name == "motion":
        return x, rng.standard_normal((1, N_FRAMES, *LATENT)), None
    return x, rng.standard_normal((1, N_FLOWS, 2, GRID, GRID)), rng.integers(0, 256, (1, IMAGE, IMAGE, 3), np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoders", help="a folder of trained decoders (python -m pipelines train --out)")
    parser.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    parser.add_argument("--internal-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"One clip on CPU, {args.threads} threads; IG n_steps={args.n_steps}, internal_batch_size="
          f"{args.internal_batch_size}; median of {args.repeats} after a warm-up.\n")  # fmt: skip
    print("| decoder | method | seconds | target | met |\n|---|---|---|---|---|")
    for name, model in demo_models(args.decoders).items():
        x, ref, first = one_clip(name, rng)
        objective = decoder_objective(name, model, ref, first=first)
        covariance = InputCovariance(rng.standard_normal((N_TRAIN, *x.shape[1:])).astype(np.float32))
        for method, target in TARGETS.items():
            times = []
            for _ in range(args.repeats + 1):
                result = attribute(
                    objective,
                    x,
                    method,
                    n_steps=args.n_steps,
                    internal_batch_size=args.internal_batch_size,
                    covariance=covariance,
                )
                times.append(result.seconds)
            seconds = statistics.median(times[1:])
            print(f"| {name} | {method} | {seconds:.3f} | <= {target} | {'yes' if seconds <= target else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
