"""``python -m pipelines build-bundle``: assemble a bundle from trained decoders, the renderer and the data.

Steps: (1) prepare the subject and its teacher features with the decoders' config (cached, as training did);
(2) load the trained decoders and the renderer's 2-D UNet and VAE, and inflate the UNet to video;
(3) compute the constants from the **training** split only (mean fMRI window, mean first-frame latent) and the
empty caption's conditioning tokens; (4) save the pipeline (``VideoReconstructionPipeline.save_pretrained``) and the
test clips (fMRI windows + ground-truth frames, optionally the first ``--n-test``) beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from pipelines.evaluation.evaluate import write_json
from pipelines.features.backbones import load_backbone
from pipelines.models.registry import DECODERS
from pipelines.models.video_unet import VideoUNet, inflate_unet
from pipelines.reconstruct import (
    BUNDLE_JSON,
    TEST_CLIPS,
    BundleInfo,
    ReconstructionConfig,
    VideoReconstructionPipeline,
    seal_bundle,
)
from pipelines.training.decoders.config import load_decoders_config
from pipelines.training.decoders.data import DecoderData
from pipelines.training.decoders.train import add_data_arguments, load_data, parse_data_arguments


def build_pipeline(
    data: DecoderData,
    decoders_dir: str | Path,
    backbones_dir: str | Path,
    flow_stride: int,
    renderer_dir: str | Path | None = None,
    config: ReconstructionConfig | None = None,
) -> VideoReconstructionPipeline:
    """A pipeline over the decoders saved in ``decoders_dir`` and the demo renderer of ``backbones_dir``.

    Parameters
    ----------
    renderer_dir : str or Path, optional
        An inflated renderer with trained temporal layers (``VideoUNet.save_pretrained``); default: the demo UNet
        inflated with untrained (zero) temporal layers, Mind-Animator's choice.

    Raises
    ------
    FileNotFoundError
        If a required decoder (semantic, structure, motion) is missing.
    """
    decoders_dir, backbones_dir = Path(decoders_dir), Path(backbones_dir)
    decoders = {}
    for name, cls in DECODERS.items():
        folder = decoders_dir / name
        if (folder / "config.json").is_file():
            decoders[name] = cls.from_pretrained(folder)
        elif name in VideoReconstructionPipeline.REQUIRED:
            raise FileNotFoundError(
                f"{folder} does not exist; expected the trained {name} decoder (python -m pipelines train --stage "
                f"{name} --out {decoders_dir})."
            )
    if renderer_dir is not None:
        renderer = VideoUNet.from_pretrained(renderer_dir)
    else:
        renderer = inflate_unet(UNet2DConditionModel.from_pretrained(backbones_dir / "unet"), temporal=True)
    vae = AutoencoderKL.from_pretrained(backbones_dir / "vae")
    clip = load_backbone("clip", "demo", backbones_dir)

    train = data.splits["train"]
    encoder_window = decoders["fmri-encoder"].config.window if "fmri-encoder" in decoders else 1
    info = BundleInfo(
        dataset=data.dataset.name,
        subject=data.dataset.subject,
        simulated=train.category is not None,
        n_voxels=data.n_voxels,
        window=int(train.fmri.shape[1]),
        centre=int(data.centre),
        encoder_window=int(encoder_window),
        n_frames=int(train.latents.shape[1]),
        fps=float(data.dataset.fps),
        image_size=int(vae.config.sample_size),  # what the renderer outputs; ground truth may be larger
        flow_stride=int(flow_stride),
        data_key=data.dataset.key,
        backbones=data.teachers,
    )
    constants = {
        "voxel_grayordinates": torch.from_numpy(np.asarray(data.dataset.voxel_grayordinates, np.int64)),
        "mean_fmri": torch.from_numpy(train.fmri.mean(axis=0).astype(np.float32)),
        "empty_tokens": torch.from_numpy(clip.text_tokens([""])[0].astype(np.float32)),
        "mean_latent": torch.from_numpy(train.latents[:, 0].mean(axis=0).astype(np.float32)),
    }
    return VideoReconstructionPipeline(info, decoders, renderer, vae, constants, config)


def save_test_clips(
    data: DecoderData, directory: str | Path, n_test: int | None = None, dtype: str = "float32"
) -> Path:
    """Write the test split's fMRI windows, ground-truth frames, labels and the teacher features the decoders are
    scored against (caption text embeddings, RAFT flows) — the first ``n_test`` clips, the fMRI and flows stored
    as ``dtype`` (float16: half their size; :func:`pipelines.reconstruct.load_bundle_clips` returns float32)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected 'float32' or 'float16', got {dtype!r}.")
    split = data.splits["test"]
    n = len(split) if n_test is None else min(n_test, len(split))
    frames = np.array(data.dataset.splits["test"].frames[:n], np.uint8)  # a copy: the split is memory-mapped

    def copied(array: np.ndarray, dtype: type) -> torch.Tensor:  # features may be read-only (memory-mapped caches)
        return torch.from_numpy(np.array(array[:n], dtype))

    tensors = {
        "fmri": copied(split.fmri, np.dtype(dtype)),
        "frames": torch.from_numpy(frames),
        "text": copied(split.text, np.float32),
        "flows": copied(split.flows, np.dtype(dtype)),
    }
    if split.category is not None:
        tensors["category"] = copied(split.category, np.int64)
        tensors["direction"] = copied(split.direction, np.int64)
    path = Path(directory) / TEST_CLIPS
    save_file(tensors, path, metadata={"captions": json.dumps(split.captions[:n].tolist())})
    return path


def git_revision(exclude: str | Path | None = None) -> dict[str, Any]:
    """The repository's commit and whether tracked files had changes (``None`` outside a git checkout).

    Untracked files do not count, nor does the folder ``exclude`` (the bundle being written, which may itself be
    tracked, as ``assets/demo`` is).
    """
    import subprocess

    root = Path(__file__).resolve().parents[1]
    pathspec = ["--", "."]
    if exclude is not None:
        try:
            pathspec.append(f":(exclude){Path(exclude).resolve().relative_to(root).as_posix()}")
        except ValueError:  # outside the repository: nothing to leave out
            pass
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return {"git_revision": None, "git_dirty": None}
    return {"git_revision": rev.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def record_command(directory: str | Path, command: str, argv: list[str]) -> Path:
    """Append ``python -m pipelines COMMAND ARGS`` to ``bundle.json``'s ``provenance`` with the code's revision."""
    import shlex

    path = Path(directory) / BUNDLE_JSON
    manifest = json.loads(path.read_text())
    provenance = manifest.setdefault("provenance", {"commands": []})
    provenance["commands"].append(
        {"command": f"python -m pipelines {command} " + shlex.join(argv), **git_revision(exclude=directory)}
    )
    return write_json(path, manifest, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines build-bundle", description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--decoders", required=True, help="the folder train --out wrote (one folder per stage)")
    parser.add_argument("--renderer", help="an inflated renderer with trained temporal layers (default: untrained)")
    parser.add_argument("--out", required=True, help="the bundle folder to write")
    parser.add_argument("--n-test", type=int, help="test clips to include (default: all)")
    parser.add_argument(
        "--weights-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="precision of the stored model weights (float16: half the size; computation stays float32)",
    )
    parser.add_argument(
        "--clips-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="precision of the stored test fMRI and flows (float16: half their size; read back as float32)",
    )
    args = parse_data_arguments(parser, argv)
    try:
        if args.tier != "demo":
            raise ValueError(
                f"--tier: expected 'demo' (full-tier bundles need the published weights), got {args.tier!r}."
            )
        config = load_decoders_config(args.config, args.overrides)
        data = load_data(config, args.data, args.backbones, args.tier, args.cache_dir)
        stride = config.stages["flow"].train.stride
        pipeline = build_pipeline(data, args.decoders, args.backbones, stride, args.renderer)
        pipeline.save_pretrained(args.out, weights_dtype=args.weights_dtype)
        path = save_test_clips(data, args.out, args.n_test, args.clips_dtype)
        seal_bundle(args.out)  # SHA-256 of every file; from_pretrained checks them
        record_command(args.out, "build-bundle", sys.argv[1:] if argv is None else argv)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"bundle written to {args.out} ({size / 2**20:.1f} MiB; test clips in {path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
