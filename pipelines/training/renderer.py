"""``python -m pipelines train-renderer``: fine-tune the inflated renderer's temporal layers on training clips.

NeuroCine (NeuralFlix, arXiv 2402.01590; ../shared/reference/methods_and_protocols.md C.5) has no public code and
is known from its abstract only: a contrastive fMRI encoder trained with spatial masking and temporal interpolation,
and a video diffusion model sampled from *dependent prior noise*, ε_j = √β·ε_shared + √(1−β)·ε_j for the frames j
of a clip (:func:`pipelines.models.sampling.dependent_noise`). Mind-Animator, by contrast, inflates SD 1.x with
Tune-A-Video and keeps the added temporal layers untrained (C.1); at their zero initialisation
(:class:`pipelines.models.video_unet.TemporalAttention`) they add nothing, so each frame is rendered by the 2-D model
with sparse-causal attention only.

This module gives the renderer what the abstract implies and the 2-D demo UNet lacks: temporal layers that have seen
video. The recipe is ours, not NeuroCine's (the abstract names no layers, data or schedule):

1. Frozen teachers: the demo VAE's scaled latents of every training clip, (n_clips, channels, n_frames, h, w), and
   the demo CLIP text tower's token outputs for every caption (+ the empty caption).
2. The 2-D demo UNet (``backbones/unet``) inflated with zero-initialised temporal attention
   (:func:`pipelines.models.video_unet.inflate_unet`); everything but ``temporal_parameters()`` is frozen, so the
   per-frame model stays the one ``train-backbones`` selected.
3. Objective, as the 2-D UNet was trained (:mod:`pipelines.training.backbones.unet`): epsilon prediction under SD's
   scaled-linear DDPM schedule, captions dropped to the empty caption 10 % of the time; but on whole clips, with one
   timestep per clip and the training noise drawn from the same dependent prior (β = ``noise_beta``) the sampler
   starts from, so the temporal layers learn the noise statistics they will meet.
4. Selection: denoising loss on a fixed subset of validation clips at fixed timesteps and fixed dependent noise (lower
   is better), run by the resumable loop (:func:`pipelines.training.loop.train`). The same loss of the untrained
   (zero) temporal layers is reported beside it as ``baseline_val_loss``: Mind-Animator's choice, for comparison.

The result is written with :meth:`VideoUNet.save_pretrained` and opened by ``build-bundle --renderer``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from pipelines.config import config_hash
from pipelines.features.backbones import load_backbone
from pipelines.models.sampling import SD_SCHEDULE, dependent_noise
from pipelines.models.video_unet import inflate_unet
from pipelines.training.backbones.data import BackboneData, load_backbone_data
from pipelines.training.loop import LoopConfig, train

CAPTION_DROPOUT = 0.1  # as the 2-D UNet was trained: classifier-free guidance needs the empty caption
N_VALIDATION = 32  # validation clips (each n_frames latents) in the fixed selection batch
NOISE_BETA = 0.5  # shared fraction of the per-frame noise variance (NeuroCine's β; the abstract gives no value)
ROLES = ("vae", "clip", "unet")  # the demo backbones this trainer reads
DEFAULT_LOOP = LoopConfig(steps=300, batch_size=4, lr=1e-3, warmup=30, eval_every=50)


def _check_backbones(backbones_dir: Path) -> None:
    for role in ROLES:
        if not (backbones_dir / role).is_dir():
            raise FileNotFoundError(
                f"{backbones_dir / role} does not exist; expected the demo-tier {role} there. Train the backbones "
                f"first (python -m pipelines train-backbones --out {backbones_dir})."
            )


def _check_beta(noise_beta: float) -> None:
    if isinstance(noise_beta, bool) or not isinstance(noise_beta, int | float) or not 0.0 <= noise_beta <= 1.0:
        raise ValueError(
            f"noise_beta: expected a number in [0, 1] (0: independent noise per frame), got {noise_beta!r}."
        )


def _clip_latents(vae, frames: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Scaled VAE latents of clips (n_clips, n_frames, H, W, 3) → tensor (n_clips, channels, n_frames, h, w)."""
    n_clips, n_frames = frames.shape[:2]
    flat = frames.reshape(-1, *frames.shape[2:])
    out = [vae.encode(flat[i : i + batch_size]) for i in tqdm(range(0, len(flat), batch_size), desc="VAE latents")]
    latents = torch.from_numpy(np.concatenate(out))
    return latents.unflatten(0, (n_clips, n_frames)).transpose(1, 2).contiguous()


def train_renderer(
    data: BackboneData,
    backbones_dir: str | Path,
    out: str | Path,
    loop: LoopConfig = DEFAULT_LOOP,
    noise_beta: float = NOISE_BETA,
    workdir: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """Fine-tune the temporal layers of the inflated demo renderer on training clips; save it to ``out``.

    Parameters
    ----------
    data : BackboneData
        The simulated subject: frames of shape (n_clips, n_frames, height, width, 3) per split, with captions.
    backbones_dir : str or Path
        The demo backbones folder: ``vae``, ``clip`` and ``unet`` (the 2-D renderer) are read from it.
    out : str or Path
        Where :meth:`VideoUNet.save_pretrained` writes the inflated renderer (``build-bundle --renderer OUT``).
    loop : LoopConfig
        Optimisation settings; ``batch_size`` counts clips.
    noise_beta : float
        Dependent prior noise: shared fraction of the per-frame noise variance, in [0, 1].
    workdir : str or Path, optional
        Checkpoints (default ``out/.checkpoints``), in a sub-folder per (loop, noise_beta, data): the same settings
        resume, changed settings start afresh.
    device : str
        Torch device.

    Returns
    -------
    dict
        The meta written to ``video_unet.json``: ``data_key``, ``steps``, ``best_step``, ``best_val_loss``,
        ``baseline_val_loss`` (the zero temporal layers on the same validation batch), ``noise_beta``, ``seconds``,
        ``loop``, ``schedule``, ``caption_dropout``, ``n_trained_params``.

    Raises
    ------
    FileNotFoundError
        If ``backbones_dir`` lacks ``vae``, ``clip`` or ``unet``.
    ValueError
        For ``noise_beta`` outside [0, 1] or a split without clip frames.
    """
    backbones_dir, out = Path(backbones_dir), Path(out)
    _check_backbones(backbones_dir)
    _check_beta(noise_beta)
    train_frames, val_frames = data.frames("train"), data.frames("val")
    workdir = Path(workdir) if workdir is not None else out / ".checkpoints"
    workdir = workdir / config_hash(loop, {"noise_beta": noise_beta, "data_key": data.dataset.key})
    start = time.time()

    # 1. Frozen teachers: clip latents, caption tokens (+ the empty caption).
    vae = load_backbone("vae", "demo", backbones_dir, device)
    clip = load_backbone("clip", "demo", backbones_dir, device)
    latents = _clip_latents(vae, train_frames).to(device)
    vocabulary, caption_index = np.unique(np.append(data.labels["train"]["caption"], ""), return_inverse=True)
    tokens = torch.from_numpy(clip.text_tokens(list(vocabulary))).to(device)
    empty = int(np.flatnonzero(vocabulary == "")[0])
    caption_index = torch.from_numpy(caption_index[:-1])

    # 2. The inflated renderer: only the temporal layers train.
    unet2d = UNet2DConditionModel.from_pretrained(backbones_dir / "unet")
    renderer = inflate_unet(unet2d, temporal=True, seed=loop.seed).to(device)
    del unet2d
    renderer.requires_grad_(False)
    params = renderer.temporal_parameters()
    for p in params:
        p.requires_grad_(True)

    # 3. A fixed validation batch: clips, their captions, one timestep and dependent noise per clip.
    rng = np.random.default_rng(0)
    val_pick = np.sort(rng.choice(len(val_frames), min(N_VALIDATION, len(val_frames)), replace=False))
    val_latents = _clip_latents(vae, val_frames[val_pick])
    n_train_t = SD_SCHEDULE["num_train_timesteps"]
    val = {
        "latents": val_latents.to(device),
        "tokens": torch.from_numpy(clip.text_tokens(list(data.labels["val"]["caption"][val_pick]))).to(device),
        "t": torch.from_numpy(rng.integers(0, n_train_t, len(val_pick))).to(device),
        "noise": dependent_noise(
            tuple(val_latents.shape), noise_beta, torch.Generator().manual_seed(int(rng.integers(2**62))), device
        ),
    }
    scheduler = DDPMScheduler(**SD_SCHEDULE)

    # 4. Denoising objective on whole clips, noise from the dependent prior.
    def sample_batch(g: np.random.Generator) -> dict:
        pick = torch.from_numpy(g.choice(len(latents), loop.batch_size))
        index = caption_index[pick].clone()
        index[torch.from_numpy(g.random(loop.batch_size) < CAPTION_DROPOUT)] = empty
        t = torch.from_numpy(g.integers(0, n_train_t, loop.batch_size))
        generator = torch.Generator().manual_seed(int(g.integers(2**62)))
        noise = dependent_noise((loop.batch_size, *latents.shape[1:]), noise_beta, generator, device)
        return {"latents": latents[pick], "tokens": tokens[index], "t": t.to(device), "noise": noise}

    def loss_fn(unet, batch: dict) -> torch.Tensor:
        noisy = scheduler.add_noise(batch["latents"], batch["noise"], batch["t"])
        return F.mse_loss(unet(noisy, batch["t"], batch["tokens"]), batch["noise"])

    @torch.no_grad()
    def validate(unet) -> float:
        return float(loss_fn(unet, val))

    baseline = validate(renderer.eval())

    # 5. Train, keep the best validation weights, save.
    renderer, result = train("renderer", renderer, sample_batch, loss_fn, validate, loop, workdir, params=params)
    if result.best_score >= baseline:
        warnings.warn(
            f"train_renderer: the best validation loss {result.best_score:.4f} (step {result.best_step}) is not below "
            f"that of the untrained temporal layers ({baseline:.4f}); lower loop.lr or raise loop.steps, or build "
            "the bundle without --renderer.",
            stacklevel=2,
        )
    meta = {"data_key": data.dataset.key, "steps": loop.steps, "best_step": result.best_step,
            "best_val_loss": result.best_score, "baseline_val_loss": baseline, "noise_beta": float(noise_beta),
            "seconds": time.time() - start, "loop": asdict(loop), "schedule": SD_SCHEDULE,
            "caption_dropout": CAPTION_DROPOUT, "n_trained_params": sum(p.numel() for p in params)}  # fmt: skip
    renderer.save_pretrained(out, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines train-renderer``."""
    parser = argparse.ArgumentParser(prog="python -m pipelines train-renderer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="simulated subject folder (python -m pipelines simulate)")
    parser.add_argument(
        "--backbones", required=True, help="demo backbones folder (python -m pipelines train-backbones)"
    )
    parser.add_argument("--out", required=True, help="folder for the inflated renderer (build-bundle --renderer OUT)")
    parser.add_argument("--steps", type=int, default=DEFAULT_LOOP.steps, help="optimiser steps (default %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_LOOP.batch_size, help="clips per step (default %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LOOP.lr, help="AdamW peak learning rate (default %(default)s)"
    )
    parser.add_argument(
        "--noise-beta", type=float, default=NOISE_BETA, help="dependent prior noise β in [0, 1] (default %(default)s)"
    )
    parser.add_argument("--workdir", help="checkpoints (default OUT/.checkpoints)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--cache-dir", help="prepared-dataset cache (default $MINDREEL_CACHE)")
    args = parser.parse_args(argv)
    loop = LoopConfig(**{**asdict(DEFAULT_LOOP), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr})
    try:
        if loop.steps < 1 or loop.batch_size < 1:
            raise ValueError(
                f"--steps and --batch-size: expected positive integers, got {loop.steps} and {loop.batch_size}."
            )
        _check_backbones(Path(args.backbones))  # before the data: preparing it takes a while
        _check_beta(args.noise_beta)
        data = load_backbone_data(args.data, args.cache_dir)
        meta = train_renderer(data, args.backbones, args.out, loop, args.noise_beta, args.workdir, args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"renderer: validation loss {meta['best_val_loss']:.4f} at step {meta['best_step']} (untrained temporal "
        f"layers: {meta['baseline_val_loss']:.4f}); saved to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
