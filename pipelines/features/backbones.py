"""Teacher backbones behind one interface, in two tiers chosen by configuration only (DESIGN.md "Two tiers").

Every role has one wrapper class here; the ``full`` tier (published weights, :mod:`pipelines.features.full_tier`)
and the ``demo`` tier (models this project trains, :mod:`pipelines.features.demo_tier`) both return these wrappers,
so the code that uses a backbone never knows which tier it has. Wrappers take and return numpy arrays in the
project's vocabulary — frames are uint8 arrays of shape (n_frames, height, width, 3) — and do their own
resizing and normalisation.

Roles: ``clip`` (image and text embeddings, and the text tokens that condition the renderer), ``vae`` (image
latents with the scaling factor applied), ``unet`` (the renderer's denoiser, with its text encoder), ``raft``
(optical flow), ``frame_classifier`` and ``video_classifier`` (logits for the n-way metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROLES = ("clip", "vae", "unet", "raft", "frame_classifier", "video_classifier", "vifi")
TIERS = ("full", "demo")
RAFT_MIN_SIZE = 128  # torchvision RAFT needs feature maps of at least 16 x 16 at 1/8 resolution


class BackboneUnavailableError(RuntimeError):
    """A backbone's weights cannot be loaded here (e.g. full-tier weights offline); the message says how to get them."""


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate frames: uint8 array of shape (n_frames, height, width, 3)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected a uint8 array of shape (n_frames, height, width, 3), "
            f"got {frames.dtype} array of shape {frames.shape}."
        )
    return frames


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (n, height, width, 3) → float tensor (n, 3, height, width) in [0, 1]."""
    # np.require copies only read-only (e.g. memory-mapped) or non-contiguous input; torch needs writable memory
    return torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(device).permute(0, 3, 1, 2).float() / 255.0


def to_frames(images: torch.Tensor) -> np.ndarray:
    """Float tensor (n, 3, height, width) in [0, 1] → uint8 (n, height, width, 3)."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class ImageTextEncoder:
    """CLIP-style joint embedding (open_clip model in both tiers)."""

    model: torch.nn.Module  # open_clip CLIP: encode_image, encode_text, logit_scale
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str  # identifies the weights in feature caches, e.g. "full:ViT-B-32/openai"
    resize_size: int | None = None  # if set: resize to this square size, then centre-crop image_size (ViFi-CLIP)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @torch.no_grad()
    def encode_image(self, frames: np.ndarray) -> np.ndarray:
        """L2-normalised image embeddings: array of shape (n_frames, embed_dim), float32."""
        x = to_tensor(check_frames(frames), self.device)
        size = self.resize_size or self.image_size
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        if size != self.image_size:  # centre crop
            top = (size - self.image_size) // 2
            x = x[..., top : top + self.image_size, top : top + self.image_size]
        mean = torch.tensor(self.mean, device=x.device)[:, None, None]
        std = torch.tensor(self.std, device=x.device)[:, None, None]
        return F.normalize(self.model.encode_image((x.clamp(0, 1) - mean) / std), dim=-1).float().cpu().numpy()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> np.ndarray:
        """L2-normalised text embeddings: array of shape (n_captions, embed_dim), float32."""
        tokens = self.tokenizer(check_captions(captions)).to(self.device)
        return F.normalize(self.model.encode_text(tokens), dim=-1).float().cpu().numpy()

    @torch.no_grad()
    def text_tokens(self, captions: list[str]) -> np.ndarray:
        """Per-token outputs of the text tower (the renderer's conditioning): (n_captions, context_length, width)."""
        tokens = self.tokenizer(check_captions(captions)).to(self.device)
        m = self.model
        x = m.token_embedding(tokens) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        return m.ln_final(x).float().cpu().numpy()


@dataclass
class LatentAutoencoder:
    """Image latents of a diffusers ``AutoencoderKL``, multiplied by its ``scaling_factor``."""

    model: torch.nn.Module  # diffusers AutoencoderKL
    image_size: int  # frames are resized to this square size before encoding
    name: str

    @property
    def scaling_factor(self) -> float:
        return float(self.model.config.scaling_factor)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Latent means x scaling factor: array of shape (n_frames, latent_channels, h, w), float32."""
        x = to_tensor(check_frames(frames), next(self.model.parameters()).device)
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )
        latent = self.model.encode(x * 2 - 1).latent_dist.mean
        return (latent * self.scaling_factor).float().cpu().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Frames from scaled latents: uint8 array of shape (n_frames, image_size, image_size, 3)."""
        z = torch.as_tensor(latents, dtype=torch.float32, device=next(self.model.parameters()).device)
        return to_frames((self.model.decode(z / self.scaling_factor).sample + 1) / 2)


@dataclass
class Renderer:
    """The text-conditioned denoiser the renderer inflates to video, with the encoder that conditions it."""

    unet: torch.nn.Module  # diffusers UNet2DConditionModel
    condition: Callable[[list[str]], np.ndarray]  # captions → (n, tokens, cross_attention_dim)
    name: str


@dataclass
class FlowEstimator:
    """Optical flow with torchvision RAFT; small inputs are resized up and the flow rescaled back."""

    model: torch.nn.Module  # torchvision RAFT
    num_flow_updates: int
    name: str

    @torch.no_grad()
    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Forward flow from ``first`` to ``second``.

        Parameters
        ----------
        first, second : arrays of shape (n_pairs, height, width, 3), uint8

        Returns
        -------
        array of shape (n_pairs, height, width, 2), float32
            dx (rightwards), dy (downwards) in pixels of the input size.
        """
        first, second = check_frames(first, "first"), check_frames(second, "second")
        if first.shape != second.shape:
            raise ValueError(f"second: expected the shape of first {first.shape}, got {second.shape}.")
        height, width = first.shape[1:3]
        size = (raft_size(height), raft_size(width))
        device = next(self.model.parameters()).device
        a, b = (
            F.interpolate(to_tensor(f, device), size=size, mode="bilinear", align_corners=False)
            for f in (first, second)
        )
        flow = self.model(a * 2 - 1, b * 2 - 1, num_flow_updates=self.num_flow_updates)[-1]
        return rescale_flow(flow, height, width).permute(0, 2, 3, 1).float().cpu().numpy()


def raft_size(n: int) -> int:
    """Smallest multiple of 8 that is >= max(n, RAFT_MIN_SIZE)."""
    return int(np.ceil(max(n, RAFT_MIN_SIZE) / 8) * 8)


def rescale_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a flow field (n, 2, h, w) to (n, 2, height, width), scaling dx by width / w and dy by height / h."""
    h, w = flow.shape[-2:]
    if (h, w) == (height, width):
        return flow
    if height <= h and width <= w:  # shrinking: each coarse cell gets the mean flow of the pixels it covers
        out = F.interpolate(flow, size=(height, width), mode="area")
    else:
        out = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = torch.tensor([width / w, height / h], dtype=out.dtype, device=out.device)[None, :, None, None]
    return out * scale


@dataclass
class Classifier:
    """Frame or video classifier: logits over ``labels``."""

    model: torch.nn.Module
    labels: tuple[str, ...]
    forward: Callable[[torch.nn.Module, np.ndarray], torch.Tensor]  # model, frames → logits
    name: str

    @torch.no_grad()
    def logits(self, frames: np.ndarray) -> np.ndarray:
        """Logits: (n_frames, n_labels) for a frame classifier; (n_videos, n_labels) for a video classifier, whose
        input is an array of shape (n_videos, n_frames, height, width, 3)."""
        return self.forward(self.model, np.asarray(frames)).float().cpu().numpy()


def check_captions(captions: list[str]) -> list[str]:
    """Validate a list of captions (a bare string is a TypeError: it would be read as characters)."""
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions: expected a list of str, got {type(captions).__name__}.")
    return list(captions)


def load_backbone(role: str, tier: str = "demo", backbones_dir: str | None = None, device: str = "cpu") -> Any:
    """Load the backbone of ``role`` from ``tier``; the code that uses it is the same for both tiers.

    Parameters
    ----------
    role : str
        One of ROLES.
    tier : {"full", "demo"}
        ``full``: the published weights (needs them in the local Hugging Face / torch cache);
        ``demo``: the models this project trained, read from ``backbones_dir``.
    backbones_dir : str, optional
        The demo tier's folder (one sub-folder per role).

    Raises
    ------
    ValueError
        For an unknown role or tier, or the demo tier without ``backbones_dir``.
    BackboneUnavailableError
        When full-tier weights cannot be loaded here.
    """
    if role not in ROLES:
        raise ValueError(f"role: expected one of {list(ROLES)}, got {role!r}.")
    if tier == "full":
        from pipelines.features import full_tier

        return full_tier.load(role, device=device)
    if tier == "demo":
        if backbones_dir is None:
            raise ValueError("backbones_dir: the demo tier reads trained models from a folder; got None.")
        from pipelines.features import demo_tier

        return demo_tier.LOADERS[role](backbones_dir, device)
    raise ValueError(f"tier: expected one of {list(TIERS)}, got {tier!r}.")
