"""Train and evaluate the demo-tier image autoencoder (a small diffusers AutoencoderKL) on simulated frames.

Loss: L1 + MSE reconstruction of frames in [-1, 1] plus a small KL term (as in latent diffusion's KL-f4
autoencoders, without the perceptual and adversarial terms, whose networks need downloaded weights). After
training the latents are scaled by 1 / their training std (SD's ``scaling_factor`` convention), so the renderer
sees latents of unit variance. Selection: PSNR on validation frames; reported: PSNR on test frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.features import demo_tier
from pipelines.features.backbones import load_backbone, to_frames, to_tensor
from pipelines.training.backbones.data import BackboneData
from pipelines.training.loop import LoopConfig, train

KL_WEIGHT = 1e-6
N_VALIDATION_FRAMES = 256


def _flat_frames(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(-1, *frames.shape[2:])


def psnr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images: arrays of shape (n, height, width, 3) → (n,)."""
    err = np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(err, 1e-10))


def _resized(frames: np.ndarray, size: int, device: str) -> torch.Tensor:
    x = to_tensor(frames, device)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x * 2 - 1


def train_vae(
    data: BackboneData,
    arch: demo_tier.DemoBackbonesConfig,
    loop: LoopConfig,
    backbones_dir: str | Path,
    workdir: str | Path,
    device: str = "cpu",
) -> dict:
    """Train the demo VAE on training frames, select on validation PSNR, save to ``backbones_dir/vae``."""
    torch.manual_seed(loop.seed)
    model = demo_tier.build_vae(arch.vae).to(device)
    size = arch.vae.image_size
    train_frames = _flat_frames(data.split("train").frames)
    val_frames = _flat_frames(data.split("val").frames)
    val_frames = val_frames[
        np.random.default_rng(0).choice(len(val_frames), min(N_VALIDATION_FRAMES, len(val_frames)), replace=False)
    ]

    def sample_batch(rng: np.random.Generator) -> torch.Tensor:
        return _resized(train_frames[np.sort(rng.choice(len(train_frames), loop.batch_size))], size, device)

    def loss_fn(vae, x: torch.Tensor) -> torch.Tensor:
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + KL_WEIGHT * posterior.kl().mean()

    def validate(vae) -> float:
        x = _resized(val_frames, size, device)
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
        mse = ((recon.clamp(-1, 1) - x) / 2).pow(2).mean(dim=(1, 2, 3))
        return -float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())  # lower is better: −PSNR

    start = time.time()
    model, result = train("vae", model, sample_batch, loss_fn, validate, loop, workdir)

    # Latent scale from training frames only: unit variance for the renderer.
    with torch.no_grad():
        subset = train_frames[
            np.random.default_rng(1).choice(len(train_frames), min(512, len(train_frames)), replace=False)
        ]
        std = float(model.encode(_resized(subset, size, device)).latent_dist.mean.std())
    model.register_to_config(scaling_factor=1.0 / std)
    meta = {"data_key": data.dataset.key, "steps": loop.steps, "best_step": result.best_step,
            "best_val_psnr": -result.best_score, "seconds": time.time() - start}  # fmt: skip
    demo_tier.save_diffusers(model, Path(backbones_dir) / "vae", "vae", meta)
    return {**meta, "n_params": sum(p.numel() for p in model.parameters())}


def evaluate_vae(data: BackboneData, backbones_dir: str | Path, device: str = "cpu", batch_size: int = 128) -> dict:
    """Reconstruction PSNR (dB) of the saved VAE on every test frame at the VAE's resolution, and how much of the
    category its decodings keep.

    Returns ``vae_psnr`` (mean over frames), ``vae_psnr_std`` and ``vae_n_frames``. When ``backbones_dir`` also
    holds the frame classifier: ``vae_category_acc``, the share of decodings it puts in the clip's category, beside
    ``vae_frame_category_acc``, its share on the same frames before encoding. Anything drawn through this VAE (the
    renderer's samples, the reconstructions) is a decoding, so ``vae_category_acc`` bounds what the classifier can
    recognise in them.
    """
    vae = load_backbone("vae", "demo", backbones_dir, device)
    classifier = None
    if (Path(backbones_dir) / "frame_classifier" / "meta.json").is_file():
        classifier = load_backbone("frame_classifier", "demo", backbones_dir, device)
    test = data.split("test").frames
    frames = _flat_frames(test)
    scores, hits, frame_hits = [], [], []
    if classifier is not None:  # compared by name: a category the classifier does not know is never right
        names = np.asarray(classifier.labels)
        truth = np.repeat(np.asarray(data.categories)[data.labels["test"]["category_id"]], test.shape[1])
    for i in range(0, len(frames), batch_size):
        batch = frames[i : i + batch_size]
        recon = vae.decode(vae.encode(batch))
        reference = to_frames((_resized(batch, vae.image_size, "cpu") + 1) / 2)  # the frames the VAE was given
        scores.append(psnr(reference, recon))
        if classifier is not None:
            hits.append(names[classifier.logits(recon).argmax(axis=1)] == truth[i : i + batch_size])
            frame_hits.append(names[classifier.logits(reference).argmax(axis=1)] == truth[i : i + batch_size])
    scores = np.concatenate(scores)
    out = {"vae_psnr": float(scores.mean()), "vae_psnr_std": float(scores.std()), "vae_n_frames": int(len(scores))}
    if classifier is not None:
        out["vae_category_acc"] = float(np.concatenate(hits).mean())
        out["vae_frame_category_acc"] = float(np.concatenate(frame_hits).mean())
    return out
