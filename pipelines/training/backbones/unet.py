"""Train and evaluate the demo-tier renderer: a small text-conditioned UNet2DConditionModel on VAE latents.

Text-to-image latent diffusion as in Stable Diffusion, at demo scale: frames → the demo VAE's scaled latents; captions →
the demo CLIP text tower's token outputs (the conditioning the renderer inflates to video later); epsilon
prediction under SD's scaled-linear DDPM schedule; captions dropped to the empty caption 10 % of the time, so that
sampling can use classifier-free guidance. Selection: denoising loss on validation frames at fixed timesteps and
noise; reported: the demo frame classifier's accuracy on images sampled from test captions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from pipelines.features import demo_tier
from pipelines.features.backbones import Renderer, load_backbone
from pipelines.training.backbones.data import BackboneData
from pipelines.training.loop import LoopConfig, train

SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
CAPTION_DROPOUT = 0.1
N_VALIDATION = 256


def _latents(vae, frames: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Scaled VAE latents of frames (n_clips, n_frames, H, W, 3) → tensor (n_clips * n_frames, C, h, w)."""
    flat = frames.reshape(-1, *frames.shape[2:])
    out = [vae.encode(flat[i : i + batch_size]) for i in tqdm(range(0, len(flat), batch_size), desc="VAE latents")]
    return torch.from_numpy(np.concatenate(out))


def train_unet(
    data: BackboneData,
    arch: demo_tier.DemoBackbonesConfig,
    loop: LoopConfig,
    backbones_dir: str | Path,
    workdir: str | Path,
    device: str = "cpu",
) -> dict:
    """Train the renderer UNet (needs the demo CLIP and VAE in ``backbones_dir``); save to ``backbones_dir/unet``."""
    backbones_dir = Path(backbones_dir)
    vae = load_backbone("vae", "demo", backbones_dir, device)
    clip = load_backbone("clip", "demo", backbones_dir, device)
    n_frames = data.split("train").frames.shape[1]

    # 1. Frozen teachers: latents of every training frame, text tokens of every distinct caption (+ the empty one).
    latents = _latents(vae, data.split("train").frames).to(device)
    captions = np.repeat(data.labels["train"]["caption"], n_frames)
    vocabulary, caption_index = np.unique(np.append(captions, ""), return_inverse=True)
    tokens = torch.from_numpy(clip.text_tokens(list(vocabulary))).to(device)
    empty = int(np.flatnonzero(vocabulary == "")[0])
    caption_index = torch.from_numpy(caption_index[:-1])

    rng = np.random.default_rng(0)
    val_latents = _latents(vae, data.split("val").frames)
    val_pick = rng.choice(len(val_latents), min(N_VALIDATION, len(val_latents)), replace=False)
    val_captions = np.repeat(data.labels["val"]["caption"], n_frames)[val_pick]
    val = {
        "latents": val_latents[val_pick].to(device),
        "tokens": torch.from_numpy(clip.text_tokens(list(val_captions))).to(device),
        "t": torch.from_numpy(rng.integers(0, SCHEDULE["num_train_timesteps"], len(val_pick))).to(device),
        "noise": torch.from_numpy(rng.standard_normal((len(val_pick), *val_latents.shape[1:])).astype(np.float32)).to(
            device
        ),
    }
    scheduler = DDPMScheduler(**SCHEDULE)

    # 2. Denoising objective.
    def sample_batch(g: np.random.Generator) -> dict:
        pick = torch.from_numpy(g.choice(len(latents), loop.batch_size))
        index = caption_index[pick].clone()
        index[torch.from_numpy(g.random(loop.batch_size) < CAPTION_DROPOUT)] = empty
        noise = torch.from_numpy(g.standard_normal((loop.batch_size, *latents.shape[1:])).astype(np.float32))
        t = torch.from_numpy(g.integers(0, SCHEDULE["num_train_timesteps"], loop.batch_size))
        return {"latents": latents[pick], "tokens": tokens[index], "t": t.to(device), "noise": noise.to(device)}

    def loss_fn(unet, batch: dict) -> torch.Tensor:
        noisy = scheduler.add_noise(batch["latents"], batch["noise"], batch["t"])
        return F.mse_loss(unet(noisy, batch["t"], batch["tokens"]).sample, batch["noise"])

    def validate(unet) -> float:
        return float(loss_fn(unet, val))

    start = time.time()
    torch.manual_seed(loop.seed)
    unet, result = train("unet", demo_tier.build_unet(arch).to(device), sample_batch, loss_fn, validate, loop, workdir)
    meta = {"data_key": data.dataset.key, "steps": loop.steps, "best_step": result.best_step,
            "best_val_loss": result.best_score, "seconds": time.time() - start, "schedule": SCHEDULE,
            "caption_dropout": CAPTION_DROPOUT}  # fmt: skip
    demo_tier.save_diffusers(unet, backbones_dir / "unet", "unet", meta)
    return {**meta, "n_params": sum(p.numel() for p in unet.parameters())}


@torch.no_grad()
def sample_images(
    renderer: Renderer,
    vae,
    captions: list[str],
    num_inference_steps: int = 25,
    guidance_scale: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """Text-to-image samples: DDIM with classifier-free guidance (negative condition: the empty caption).

    Returns
    -------
    array of shape (n_captions, height, width, 3), uint8
    """
    unet = renderer.unet
    device = next(unet.parameters()).device
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(num_inference_steps)
    cond = torch.from_numpy(renderer.condition(list(captions))).to(device)
    uncond = torch.from_numpy(renderer.condition([""])).to(device).expand_as(cond)
    size = unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(captions), unet.config.in_channels, size, size, generator=generator).to(device)
    for t in scheduler.timesteps:
        eps = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
        eps_uncond, eps_cond = eps.chunk(2)
        x = scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, x).prev_sample
    return vae.decode(x.cpu().numpy())


def evaluate_unet(
    data: BackboneData,
    backbones_dir: str | Path,
    device: str = "cpu",
    n_samples: int = 100,
    num_inference_steps: int = 25,
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 25,
) -> dict:
    """Images sampled from ``n_samples`` test captions, classified by the demo frame classifier.

    Returns
    -------
    dict
        ``renderer_category_acc`` (fraction classified into the caption's category), ``renderer_chance``
        (1 / n_categories), ``renderer_n_samples``.
    """
    test = data.labels["test"]
    if not 1 <= n_samples <= len(test["caption"]):
        raise ValueError(f"n_samples: expected 1..{len(test['caption'])} (test clips), got {n_samples}.")
    renderer = load_backbone("unet", "demo", backbones_dir, device)
    vae = load_backbone("vae", "demo", backbones_dir, device)
    classifier = load_backbone("frame_classifier", "demo", backbones_dir, device)
    pick = np.random.default_rng(seed).choice(len(test["caption"]), n_samples, replace=False)
    predicted = []
    for i in tqdm(range(0, n_samples, batch_size), desc="renderer samples"):
        rows = pick[i : i + batch_size]
        images = sample_images(
            renderer, vae, list(test["caption"][rows]), num_inference_steps, guidance_scale, seed + i
        )
        predicted.append(classifier.logits(images).argmax(axis=1))
    label_of = {name: k for k, name in enumerate(classifier.labels)}
    truth = np.array([label_of[data.categories[c]] for c in test["category_id"][pick]])
    return {
        "renderer_category_acc": float(np.mean(np.concatenate(predicted) == truth)),
        "renderer_chance": 1.0 / len(classifier.labels),
        "renderer_n_samples": int(n_samples),
    }
