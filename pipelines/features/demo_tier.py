"""The demo tier: small backbones this project trains on the simulated subject, built from configs as data.

A backbones folder holds one sub-folder per role::

    clip/               config.json (demo + open_clip architecture), model.safetensors, meta.json
    vae/, unet/         diffusers save_pretrained (config.json, diffusion_pytorch_model.safetensors), meta.json
    raft/               config.json, model.safetensors (torchvision raft_small), meta.json
    frame_classifier/   config.json, model.safetensors (pipelines.models.classifier), meta.json

The demo renderer is conditioned on the demo CLIP's text-token outputs; the demo video classifier averages the
frame classifier's logits over a clip; the demo tier has no captioner, because the simulator writes its own
captions (:func:`pipelines.features.extract.simulated_captions`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torchvision.models.optical_flow import raft_small

from pipelines import __version__
from pipelines.config import from_dict, load_config, preset_path
from pipelines.features.backbones import (
    Classifier,
    FlowEstimator,
    ImageTextEncoder,
    LatentAutoencoder,
    Renderer,
    check_frames,
    to_tensor,
)
from pipelines.models.classifier import FrameClassifier, FrameClassifierConfig
from pipelines.models.io import META, load_state, read_config, save_module

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MODEL_NAME = "mindreel-demo-clip"


@dataclass(frozen=True)
class DemoClipConfig:
    """A small open_clip model (registered as a custom open_clip config).

    The image tower is a ViT (``vision_tower: vit``, open_clip's default and the demo preset's) or open_clip's
    ``ModifiedResNet`` (``resnet``, the tower of CLIP's RN50 family, here with ``resnet_layers`` bottleneck blocks per
    stage and stem width ``resnet_width``), whose convolutions need fewer clips to learn the objects' shapes
    (README, "Demo backbones": the category-swap test).
    """

    embed_dim: int = 128  # joint embedding size
    image_size: int = 64  # input frames are resized to this
    vision_tower: str = "vit"  # "vit" or "resnet"
    vision_layers: int = 4  # ViT blocks
    vision_width: int = 192  # ViT width
    patch_size: int = 8  # ViT patch
    vision_head_width: int = 64  # channels per ViT attention head (heads = vision_width / this)
    resnet_layers: tuple[int, ...] = (1, 1, 1, 1)  # ResNet bottleneck blocks in each of its 4 stages
    resnet_width: int = 32  # ResNet stem width (stage widths 4x, 8x, 16x, 32x it)
    context_length: int = 32  # text tokens (captions are short)
    text_width: int = 128  # text transformer width (= the renderer's cross-attention dim)
    text_heads: int = 4  # text attention heads
    text_layers: int = 2  # text transformer blocks

    def __post_init__(self) -> None:
        if self.vision_tower not in ("vit", "resnet"):
            raise ValueError(f"DemoClipConfig.vision_tower: expected 'vit' or 'resnet', got {self.vision_tower!r}.")
        if self.vision_tower == "resnet":
            if len(self.resnet_layers) != 4 or min(self.resnet_layers) < 1:
                raise ValueError(
                    f"DemoClipConfig.resnet_layers: expected 4 positive block counts, got {list(self.resnet_layers)}."
                )
            if self.image_size % 32:
                raise ValueError(
                    f"DemoClipConfig.image_size: expected a multiple of 32 for the ResNet tower (it downsamples 32x), "
                    f"got {self.image_size}."
                )

    def open_clip_config(self) -> dict:
        if self.vision_tower == "resnet":
            vision = {"image_size": self.image_size, "layers": list(self.resnet_layers), "width": self.resnet_width}
        else:
            vision = {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": self.vision_head_width,
            }
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": vision,
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }


@dataclass(frozen=True)
class DemoVAEConfig:
    """A small diffusers AutoencoderKL."""

    image_size: int = 64  # frames are resized to this square size
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # one level per entry; latents are image_size / 2^(n-1)
    latent_channels: int = 4  # latent channels, as SD
    layers_per_block: int = 1  # resnet blocks per level
    norm_num_groups: int = 16  # group norm groups
    scaling_factor: float = 1.0  # latents are multiplied by this (set to 1 / std after training)


@dataclass(frozen=True)
class DemoUNetConfig:
    """A small text-conditioned diffusers UNet2DConditionModel over the demo VAE's latents."""

    block_out_channels: tuple[int, ...] = (64, 128, 128)  # widths; cross-attention in all but the last level
    layers_per_block: int = 1  # resnet blocks per level
    attention_head_dim: int = 8  # channels per attention head
    norm_num_groups: int = 16  # group norm groups


@dataclass(frozen=True)
class DemoRaftConfig:
    """torchvision raft_small trained on the simulator's exact flow."""

    num_flow_updates: int = 12  # RAFT refinement iterations at inference


@dataclass(frozen=True)
class DemoBackbonesConfig:
    """Every demo-tier architecture (pipelines/configs/backbones/demo.yaml)."""

    clip: DemoClipConfig = field(default_factory=DemoClipConfig)
    vae: DemoVAEConfig = field(default_factory=DemoVAEConfig)
    unet: DemoUNetConfig = field(default_factory=DemoUNetConfig)
    raft: DemoRaftConfig = field(default_factory=DemoRaftConfig)
    frame_classifier: FrameClassifierConfig = field(default_factory=FrameClassifierConfig)


def default_config() -> DemoBackbonesConfig:
    return load_config(DemoBackbonesConfig, preset_path("backbones", "demo"))


# --- builders (random weights) ------------------------------------------------------------------------------------


def build_clip(config: DemoClipConfig) -> torch.nn.Module:
    """An open_clip CLIP with the demo architecture (random weights)."""
    open_clip.factory._MODEL_CONFIGS[CLIP_MODEL_NAME] = config.open_clip_config()  # open_clip's custom-config hook
    return open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)


def clip_tokenizer(config: DemoClipConfig):
    """open_clip's CLIP BPE tokenizer (its vocabulary ships inside the package) at the demo context length."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=config.context_length)


def build_vae(config: DemoVAEConfig) -> AutoencoderKL:
    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(config.block_out_channels),
        latent_channels=config.latent_channels,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size,
        scaling_factor=config.scaling_factor,
    )


def build_unet(config: DemoBackbonesConfig) -> UNet2DConditionModel:
    """The demo denoiser: latent size and channels from the VAE, cross-attention width from the CLIP text tower."""
    u, v = config.unet, config.vae
    n = len(u.block_out_channels)
    return UNet2DConditionModel(
        sample_size=v.image_size // 2 ** (len(v.block_out_channels) - 1),
        in_channels=v.latent_channels,
        out_channels=v.latent_channels,
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=config.clip.text_width,
        attention_head_dim=u.attention_head_dim,
        norm_num_groups=u.norm_num_groups,
    )


def build_raft() -> torch.nn.Module:
    return raft_small(weights=None)


# --- save -------------------------------------------------------------------------------------------------------


def save_clip(model: torch.nn.Module, config: DemoClipConfig, directory: str | Path, meta: dict | None = None) -> Path:
    return save_module(model, directory, {"demo_clip": asdict(config)}, {"role": "clip", **(meta or {})})


def save_diffusers(model, directory: str | Path, role: str, meta: dict | None = None) -> Path:
    """Save a diffusers model (safetensors) with a meta.json beside it."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    meta = {"code_version": __version__, "role": role, **(meta or {})}
    (directory / META).write_text(json.dumps(meta, indent=2))
    return directory


def save_raft(model: torch.nn.Module, config: DemoRaftConfig, directory: str | Path, meta: dict | None = None) -> Path:
    return save_module(model, directory, {"arch": "raft_small", **asdict(config)}, {"role": "raft", **(meta or {})})


# --- load -------------------------------------------------------------------------------------------------------


def weights_id(directory: Path) -> str:
    """Short hash of a folder's weight files: the backbone's identity in feature caches."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _role_dir(backbones_dir: str | Path, role: str) -> Path:
    path = Path(backbones_dir) / role
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} does not exist; expected the demo-tier {role} saved there "
            "(python -m pipelines train-backbones --preset demo writes every role)."
        )
    return path


class _TrainedWeightsFollow(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" while trained weights are loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def load_clip(backbones_dir: str | Path, device: str = "cpu") -> ImageTextEncoder:
    path = _role_dir(backbones_dir, "clip")
    config = from_dict(DemoClipConfig, read_config(path)["demo_clip"], where=str(path / "config.json"))
    quiet = _TrainedWeightsFollow()
    logging.getLogger().addFilter(quiet)  # the weights are read right after: the warning would be false
    try:
        model = build_clip(config)
    finally:
        logging.getLogger().removeFilter(quiet)
    model = load_state(model, path, device)
    return ImageTextEncoder(
        model=model,
        tokenizer=clip_tokenizer(config),
        image_size=config.image_size,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        name=f"demo:clip:{weights_id(path)}",
    )


def load_vae(backbones_dir: str | Path, device: str = "cpu") -> LatentAutoencoder:
    path = _role_dir(backbones_dir, "vae")
    model = AutoencoderKL.from_pretrained(path).to(device).eval()
    return LatentAutoencoder(model=model, image_size=int(model.config.sample_size), name=f"demo:vae:{weights_id(path)}")


def load_renderer(backbones_dir: str | Path, device: str = "cpu") -> Renderer:
    path = _role_dir(backbones_dir, "unet")
    unet = UNet2DConditionModel.from_pretrained(path).to(device).eval()
    clip = load_clip(backbones_dir, device)
    return Renderer(unet=unet, condition=clip.text_tokens, name=f"demo:unet:{weights_id(path)}+{clip.name}")


def load_raft(backbones_dir: str | Path, device: str = "cpu") -> FlowEstimator:
    path = _role_dir(backbones_dir, "raft")
    config = read_config(path)
    if config.get("arch") != "raft_small":
        raise ValueError(f"{path / 'config.json'}: expected arch 'raft_small', got {config.get('arch')!r}.")
    model = load_state(build_raft(), path, device)
    return FlowEstimator(
        model=model, num_flow_updates=int(config["num_flow_updates"]), name=f"demo:raft:{weights_id(path)}"
    )


def _frame_logits(model: FrameClassifier, frames: np.ndarray) -> torch.Tensor:
    x = to_tensor(check_frames(frames), next(model.parameters()).device)
    size = model.config.image_size
    return model(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True))


def _video_logits(model: FrameClassifier, videos: np.ndarray) -> torch.Tensor:
    if videos.ndim != 5:
        raise ValueError(f"videos: expected shape (n_videos, n_frames, height, width, 3), got {videos.shape}.")
    n, t = videos.shape[:2]
    return _frame_logits(model, videos.reshape(n * t, *videos.shape[2:])).reshape(n, t, -1).mean(dim=1)


def load_frame_classifier(backbones_dir: str | Path, device: str = "cpu") -> Classifier:
    path = _role_dir(backbones_dir, "frame_classifier")
    model = FrameClassifier.from_pretrained(path, device)
    return Classifier(model, model.config.labels, _frame_logits, f"demo:frame_classifier:{weights_id(path)}")


def load_video_classifier(backbones_dir: str | Path, device: str = "cpu") -> Classifier:
    """The frame classifier with its logits averaged over each clip's frames."""
    frame = load_frame_classifier(backbones_dir, device)
    return Classifier(
        frame.model, frame.labels, _video_logits, frame.name.replace("frame_classifier", "video_classifier")
    )


LOADERS = {
    "clip": load_clip,
    "vae": load_vae,
    "unet": load_renderer,
    "raft": load_raft,
    "frame_classifier": load_frame_classifier,
    "video_classifier": load_video_classifier,
    "vifi": load_clip,  # the demo tier's VIFI is the demo CLIP, frame-averaged (issue #6); the full tier has ViFi-CLIP
}
