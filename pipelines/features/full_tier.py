"""The ``full`` tier of the teacher backbones: the published weights, from the Hugging Face Hub and torchvision.

Every loader has the signature ``load_X(device="cpu", pretrained=True)`` and returns the wrapper of its role from
:mod:`pipelines.features.backbones`, so the code that uses a backbone never knows which tier it has
(DESIGN.md "Two tiers"). Where the weights come from is data, ``pipelines/configs/backbones/full.yaml`` (read into
:class:`FullTierRegistry`); the architectures are data too, ``configs/backbones/architectures/*.json``.

- ``pretrained=True`` loads the published weights, from the local cache when it holds them. Offline, a loader fails
  fast (no retry loop) with :class:`~pipelines.features.backbones.BackboneUnavailableError`, whose message names the
  role, the weights, the error seen and how to get them.
- ``pretrained=False`` builds the identical architecture with random weights and never touches the network: the
  architecture JSONs for diffusers / transformers models, ``weights=None`` for torchvision and
  ``open_clip.create_model`` without a tag. The wrapper's ``name`` then ends in ``/random``. Two documented
  exceptions: the renderer's tokenizer and the captioner (see :func:`load_renderer`, :func:`load_captioner`).

The Hugging Face cache is resolved at call time from ``HF_HUB_CACHE`` / ``HF_HOME`` (huggingface_hub reads them
once, at import), and ``HF_HUB_OFFLINE`` is honoured at call time too; torchvision's cache is ``TORCH_HOME``. Nothing
here sets an environment variable. The heavy libraries are imported inside the loaders, so importing this module
is cheap.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.config import CONFIG_DIR, load_config
from pipelines.features.backbones import (
    BackboneUnavailableError,
    Classifier,
    FlowEstimator,
    ImageTextEncoder,
    LatentAutoencoder,
    Renderer,
    check_captions,
    check_frames,
    to_tensor,
)

REGISTRY_PATH = CONFIG_DIR / "backbones" / "full.yaml"
ARCHITECTURE_DIR = CONFIG_DIR / "backbones" / "architectures"
OPT_VOCABULARY = 50265  # tokens of OPT's GPT-2 BPE tokenizer, before BLIP-2's added <image> token
PROBE_TIMEOUT_S = 3.0  # how long a loader waits for a TCP connection to a weights host before calling it offline

# ---------------------------------------------------------------------------------------------------------------
# The registry (full.yaml): one frozen dataclass per role
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSource:
    """open_clip model and pretrained tag of the ``clip`` role."""

    arch: str  # open_clip built-in model config, e.g. "ViT-B-32"
    pretrained_tag: str  # open_clip pretrained tag, e.g. "openai"
    quick_gelu: bool  # the activation the tag was trained with
    hub_repo: str  # Hugging Face repo open_clip downloads the tag from
    hub_files: tuple[str, ...]  # weight files in that repo, in open_clip's order of preference
    image_size: int  # square input size in pixels
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]


@dataclass(frozen=True)
class VaeSource:
    """Hub source of the ``vae`` role (a diffusers ``AutoencoderKL``)."""

    arch: str  # architecture name used in cache names
    repo_id: str  # Hugging Face repo
    subfolder: str  # folder of the model inside the repo
    revision: str | None  # branch, tag or commit; None for the default branch
    architecture: str  # JSON file in configs/backbones/architectures (pretrained=False)
    image_size: int  # frames are resized to this square size before encoding


@dataclass(frozen=True)
class UnetSource:
    """Hub source of the ``unet`` role: SD's denoiser with its CLIP text encoder and tokenizer."""

    arch: str  # architecture name used in cache names
    repo_id: str  # Hugging Face repo holding unet, text encoder and tokenizer
    subfolder: str  # folder of the UNet
    revision: str | None  # branch, tag or commit; None for the default branch
    architecture: str  # JSON config of the UNet
    text_encoder_subfolder: str  # folder of the transformers CLIPTextModel
    text_encoder_architecture: str  # JSON config of the text encoder
    tokenizer_subfolder: str  # folder of the transformers CLIPTokenizer
    max_length: int  # tokens per caption (padding and truncation)


@dataclass(frozen=True)
class RaftSource:
    """torchvision weights of the ``raft`` role."""

    arch: str  # torchvision model builder name
    weights: str  # torchvision weights enum member, "EnumName.MEMBER"
    num_flow_updates: int  # RAFT refinement iterations


@dataclass(frozen=True)
class FrameClassifierSource:
    """torchvision weights and preprocessing of the ``frame_classifier`` role."""

    arch: str  # torchvision model builder name
    weights: str  # torchvision weights enum member, "EnumName.MEMBER"
    resize_size: int  # shorter edge after the bilinear resize
    crop_size: int  # side of the centre crop
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]


@dataclass(frozen=True)
class VideoClassifierSource:
    """Hub source and preprocessing of the ``video_classifier`` role (transformers VideoMAE)."""

    arch: str  # architecture name used in cache names
    repo_id: str  # Hugging Face repo
    revision: str | None  # branch, tag or commit; None for the default branch
    architecture: str  # JSON config (pretrained=False)
    num_frames: int  # frames per clip the model takes; clips are resampled to it
    resize_size: int  # shorter edge after the bilinear resize
    crop_size: int  # side of the centre crop
    mean: tuple[float, float, float]  # normalisation for pretrained=False (True reads the repo's processor)
    std: tuple[float, float, float]


@dataclass(frozen=True)
class VifiSource:
    """The ``vifi`` role: ViFi-CLIP's image tower (a fully fine-tuned CLIP), read from its released checkpoint.

    ViFi-CLIP's weights are not on a model hub: the checkpoint file is downloaded from the authors' model zoo and
    placed at ``$<checkpoint_env>`` or under the torch cache (``<torch hub dir>/mindreel/<checkpoint>``).
    """

    arch: str  # open_clip built-in model config of the tower, e.g. "ViT-B-16"
    quick_gelu: bool  # OpenAI CLIP's activation, which ViFi-CLIP keeps
    checkpoint: str  # file name of the released checkpoint
    checkpoint_env: str  # environment variable that may hold the checkpoint's path
    source_url: str  # where to download it
    resize_size: int  # square resize before the centre crop (the published test pipeline)
    image_size: int  # centre-crop size
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]


@dataclass(frozen=True)
class CaptionerSource:
    """Hub source of the captioner (BLIP-2) and the tiny architecture that stands in for it with random weights."""

    arch: str  # architecture name used in cache names
    repo_id: str  # Hugging Face repo
    revision: str | None  # branch, tag or commit; None for the default branch
    max_new_tokens: int  # caption length limit in tokens
    mean: tuple[float, float, float]  # normalisation for pretrained=False (True reads the repo's processor)
    std: tuple[float, float, float]
    random_arch: str  # architecture name of the stand-in
    random_architecture: str  # JSON config of the stand-in (a tiny Blip2Config)


@dataclass(frozen=True)
class FullTierRegistry:
    """Where every full-tier backbone comes from (``configs/backbones/full.yaml``)."""

    clip: ClipSource
    vae: VaeSource
    unet: UnetSource
    raft: RaftSource
    frame_classifier: FrameClassifierSource
    video_classifier: VideoClassifierSource
    vifi: VifiSource
    captioner: CaptionerSource


def load_registry(path: str | Path = REGISTRY_PATH) -> FullTierRegistry:
    """Read the full-tier registry.

    Parameters
    ----------
    path : str or Path
        A YAML file with the fields of :class:`FullTierRegistry`; defaults to ``configs/backbones/full.yaml``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a key is unknown or a value has the wrong type.
    """
    return load_config(FullTierRegistry, path)


def read_architecture(filename: str) -> dict[str, Any]:
    """Read an architecture config from ``configs/backbones/architectures``, without its ``_``-prefixed notes.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    """
    path = ARCHITECTURE_DIR / filename
    if not path.is_file():
        available = sorted(p.name for p in ARCHITECTURE_DIR.glob("*.json"))
        raise FileNotFoundError(f"Architecture config {path} does not exist; expected one of {available}.")
    return {key: value for key, value in json.loads(path.read_text()).items() if not key.startswith("_")}


# ---------------------------------------------------------------------------------------------------------------
# Offline handling: decide fast whether weights can be had, and say how to get them when not
# ---------------------------------------------------------------------------------------------------------------


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, resolved now from HF_HUB_CACHE / HF_HOME (huggingface_hub resolves it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached now, or None if a TCP connection opens within PROBE_TIMEOUT_S.

    Without network, huggingface_hub retries for about 25 s per file, so loaders probe first and then read only the
    cache. Behind a proxy the probe cannot tell, so it answers None and lets the library try.
    """
    if urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme):
        return None
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot connect to {parts.hostname}:{port}: {err}"


def _hub_offline() -> str | None:
    """Why the Hugging Face Hub cannot be used now (offline mode, or its host does not answer), or None."""
    from huggingface_hub import constants

    flags = [name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _env_true(name)]
    if flags or constants.HF_HUB_OFFLINE:
        return f"{(flags or ['HF_HUB_OFFLINE'])[0]} is set"
    return _unreachable(constants.ENDPOINT)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _unavailable(
    role: str, weights: str, cache: Literal["hf", "torch"], why: str | None, err: BaseException | None = None
) -> BackboneUnavailableError:
    """The error for weights that cannot be loaded: role, weights, what went wrong, and how to get them."""
    seen = [why] if why else []
    if err is not None:
        lines = str(err).strip().splitlines() or [""]
        seen.append(f"{type(err).__name__}: {lines[0]}")
    if cache == "hf":
        where = f"the Hugging Face cache holds them, or copy that cache folder ({_hf_cache_dir()}, set by HF_HOME or HF_HUB_CACHE)"
    else:
        import torch.hub

        where = f"the torch cache holds them, or copy that cache folder ({torch.hub.get_dir()}, set by TORCH_HOME)"
    return BackboneUnavailableError(
        f"{role}: cannot load the full-tier weights {weights} ({'; '.join(seen) or 'unknown error'}). "
        f"To get them, run this once on a machine with network access so that {where} to this machine; "
        f"or use tier demo."
    )


def _from_hub(role: str, cls: Any, repo_id: str, revision: str | None, offline: str | None, **kwargs: Any) -> Any:
    """``cls.from_pretrained(repo_id, ...)`` from the Hub, or from the cache only when ``offline`` says why."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return cls.from_pretrained(
            repo_id,
            revision=revision or "main",
            cache_dir=_hf_cache_dir(),
            local_files_only=offline is not None,
            **kwargs,
        )
    except (OSError, HfHubHTTPError) as err:  # LocalEntryNotFoundError, OfflineModeIsEnabled, URLError are OSErrors
        folder = f", subfolder {kwargs['subfolder']}" if kwargs.get("subfolder") else ""
        raise _unavailable(role, f"{repo_id} ({cls.__name__}{folder})", "hf", offline, err) from err


def _weights_name(arch: str, repo_id: str, revision: str | None) -> str:
    return f"full:{arch}/{repo_id}" + (f"@{revision}" if revision else "")


def _torchvision_model(role: str, arch: str, weights_name: str, pretrained: bool) -> torch.nn.Module:
    """A torchvision model with the named weights (or random ones), failing fast when they cannot be downloaded."""
    import torch.hub
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(arch, weights=None)
    weights = torchvision.models.get_weight(weights_name)
    what = f"torchvision {weights_name} ({weights.url})"
    cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlsplit(weights.url).path))
    if not cached.is_file() and (why := _unreachable(weights.url)) is not None:
        raise _unavailable(role, what, "torch", why)
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a corrupt download fails its hash check
        raise _unavailable(role, what, "torch", None, err) from err


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing shared by the classifiers
# ---------------------------------------------------------------------------------------------------------------


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(n, 3, h, w) in [0, 1] → (x - mean) / std per channel."""
    mean_ = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    std_ = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean_) / std_


def preprocess_frames(
    frames: np.ndarray,
    resize_size: int,
    crop_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Classifier input: shorter edge resized (bilinear, antialiased), centre crop, normalisation.

    The same steps as torchvision's ``ImageClassification`` transform (the ViT weights' documented preprocessing)
    and transformers' ``VideoMAEImageProcessor`` (``shortest_edge`` resize, centre crop).

    Parameters
    ----------
    frames : array of shape (n_frames, height, width, 3), uint8
    resize_size, crop_size : int
        Shorter edge after resizing; side of the square centre crop.
    mean, std : tuple of 3 floats
        Normalisation of [0, 1] RGB.

    Returns
    -------
    tensor of shape (n_frames, 3, crop_size, crop_size), float32
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = to_tensor(check_frames(frames), device)
    x = TF.resize(x, [resize_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return _normalise(TF.center_crop(x, [crop_size]), mean, std)


def _classify_frames(model: torch.nn.Module, frames: np.ndarray, **preprocess: Any) -> torch.Tensor:
    """torchvision classifier: frames (n_frames, height, width, 3) uint8 → logits (n_frames, n_labels)."""
    return model(preprocess_frames(frames, device=next(model.parameters()).device, **preprocess))


def sample_frame_indices(n_frames: int, num_frames: int) -> np.ndarray:
    """``num_frames`` uniformly spaced frame indices of a clip of ``n_frames`` (repeating frames of short clips).

    Returns
    -------
    array of shape (num_frames,), int, from 0 to n_frames - 1 inclusive
    """
    return np.linspace(0, n_frames - 1, num_frames).round().astype(int)


def _check_videos(videos: np.ndarray) -> np.ndarray:
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8 or videos.shape[1] < 1:
        raise ValueError(
            f"videos: expected a uint8 array of shape (n_videos, n_frames, height, width, 3), "
            f"got {videos.dtype} array of shape {videos.shape}. Stack the clips of one length into one array."
        )
    return videos


def _classify_videos(model: torch.nn.Module, videos: np.ndarray, *, num_frames: int, **preprocess: Any) -> torch.Tensor:
    """VideoMAE: videos (n_videos, n_frames, height, width, 3) uint8 → logits (n_videos, n_labels).

    Each clip is resampled to ``num_frames`` uniformly spaced frames (:func:`sample_frame_indices`), because the
    model's fixed sinusoidal position embeddings expect exactly that many.
    """
    videos = _check_videos(videos)
    n_videos = videos.shape[0]
    frames = videos[:, sample_frame_indices(videos.shape[1], num_frames)].reshape(-1, *videos.shape[2:])
    x = preprocess_frames(frames, device=next(model.parameters()).device, **preprocess)
    return model(pixel_values=x.reshape(n_videos, num_frames, *x.shape[1:])).logits


# ---------------------------------------------------------------------------------------------------------------
# Text conditioning of the renderer, and the captioner
# ---------------------------------------------------------------------------------------------------------------


class _PaddedClipTokenizer:
    """Captions → token ids (n, max_length) with SD 1.5's transformers CLIPTokenizer, as its pipeline calls it."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(
            captions, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids


class _OpenClipBpeTokenizer:
    """Fallback for the random-weight path only: SD 1.5's token ids rebuilt from open_clip's bundled CLIP BPE.

    SD 1.5's tokenizer files cannot be read offline, but its vocabulary is OpenAI CLIP's BPE, which open_clip ships
    inside the package. Ids are <|startoftext|>, the BPE ids truncated to ``max_length - 2``, <|endoftext|>, then
    <|endoftext|> padding (SD 1.5's pad token). Text cleaning follows open_clip, which may differ from
    transformers' CLIPTokenizer on unusual unicode; with random weights that does not matter.
    """

    def __init__(self, max_length: int):
        from open_clip.tokenizer import SimpleTokenizer

        self.bpe = SimpleTokenizer(context_length=max_length)
        self.max_length = max_length

    def __call__(self, captions: list[str]) -> torch.Tensor:
        sot, eot = self.bpe.sot_token_id, self.bpe.eot_token_id
        rows = []
        for caption in captions:
            ids = [sot, *self.bpe.encode(caption)[: self.max_length - 2], eot]
            rows.append(ids + [eot] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


@dataclass
class TextConditioner:
    """SD 1.5's text conditioning: captions → last hidden state of its CLIP text encoder (``Renderer.condition``)."""

    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    tokenize: Callable[[list[str]], torch.Tensor]  # captions → token ids (n_captions, max_length)

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> np.ndarray:
        """Per-token conditioning: array of shape (n_captions, max_length, hidden_size), float32."""
        ids = self.tokenize(check_captions(captions)).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(input_ids=ids).last_hidden_state.float().cpu().numpy()


@dataclass
class Captioner:
    """Prompt-free BLIP-2 captions, one per frame (NeuroClips' captioning, ``src/caption.py``)."""

    model: torch.nn.Module  # transformers Blip2ForConditionalGeneration
    processor: Any | None  # transformers Blip2Processor; None with random weights (its tokenizer is not offline)
    name: str  # identifies the weights in caches
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as BLIP-2's processor
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    max_new_tokens: int = 30

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> list[str]:
        """Caption each frame.

        Parameters
        ----------
        frames : array of shape (n_frames, height, width, 3), uint8

        Returns
        -------
        list of n_frames str
            Decoded captions. Without a processor (random weights), the generated token ids as "<id> <id> ...".
        """
        # 1. pixel values as BLIP-2's image processor makes them: square bicubic resize, CLIP normalisation
        parameter = next(self.model.parameters())
        size = self.model.config.vision_config.image_size
        x = to_tensor(check_frames(frames), parameter.device)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        # 2. generate from the image alone (no prompt); greedy, so captions are reproducible
        ids = self.model.generate(
            pixel_values=_normalise(x, self.mean, self.std).to(parameter.dtype),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
        )
        # 3. decode, dropping the image placeholder, bos, eos and padding
        if self.processor is not None:
            return [text.strip() for text in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        config = self.model.config
        special = {
            config.image_token_index,
            *(getattr(config.text_config, f"{k}_token_id") for k in ("bos", "eos", "pad")),
        }
        return [" ".join(f"<{i}>" for i in row if i not in special) for row in ids.tolist()]


def _check_vocabulary(role: str, what: str, tokenizer: Any, expected: int, offline: str | None) -> None:
    """Raise if ``tokenizer`` lacks its vocabulary: transformers 5 returns a 2-token tokenizer, instead of raising,
    when the tokenizer files are not in the cache."""
    if len(tokenizer) < expected:
        missing = f"the tokenizer has {len(tokenizer)} tokens, expected {expected}: its files are not in the cache"
        raise _unavailable(role, what, "hf", "; ".join(filter(None, [offline, missing])))


# ---------------------------------------------------------------------------------------------------------------
# Loaders, one per role
# ---------------------------------------------------------------------------------------------------------------


def load_clip(device: str = "cpu", pretrained: bool = True) -> ImageTextEncoder:
    """OpenAI CLIP ViT-B/32 through open_clip (``ViT-B-32``, tag ``openai``, with QuickGELU as OpenAI trained it).

    Parameters
    ----------
    device : str
        Torch device of the model.
    pretrained : bool
        False builds the same architecture with random weights, offline; its name ends in "/random".

    Returns
    -------
    ImageTextEncoder
        224-px input, OpenAI CLIP normalisation, open_clip's ViT-B-32 tokenizer; embed_dim 512.

    Raises
    ------
    BackboneUnavailableError
        If ``pretrained`` and the weights are neither in the Hugging Face cache nor downloadable.
    """
    import open_clip

    src = load_registry().clip
    weights = (
        f"open_clip {src.arch} pretrained={src.pretrained_tag!r} "
        f"(Hugging Face repo {src.hub_repo}, file {' or '.join(src.hub_files)})"
    )
    source = None
    if pretrained:
        offline = _hub_offline()
        source = src.pretrained_tag if offline is None else _cached_hub_file(src.hub_repo, src.hub_files)
        if source is None:
            raise _unavailable("clip", weights, "hf", f"{offline}; not in the cache")
    try:
        model = open_clip.create_model(
            src.arch, pretrained=source, force_quick_gelu=src.quick_gelu, cache_dir=_hf_cache_dir(), device=device
        )
    except (RuntimeError, OSError) as err:  # open_clip wraps download failures in RuntimeError
        raise _unavailable("clip", weights, "hf", None, err) from err
    return ImageTextEncoder(
        model=model.eval(),
        tokenizer=open_clip.get_tokenizer(src.arch),
        image_size=src.image_size,
        mean=src.mean,
        std=src.std,
        name=f"full:{src.arch}/{src.pretrained_tag if pretrained else 'random'}",
    )


def vifi_checkpoint_path(src: VifiSource | None = None) -> Path:
    """Where :func:`load_vifi` looks for ViFi-CLIP's checkpoint: ``$<checkpoint_env>``, else the torch cache."""
    import torch.hub

    src = src or load_registry().vifi
    return Path(os.environ.get(src.checkpoint_env) or Path(torch.hub.get_dir()) / "mindreel" / src.checkpoint)


def vifi_image_state(checkpoint: Any, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The image tower's weights out of a ViFi-CLIP checkpoint, with open_clip's ``visual`` key names.

    ViFi-CLIP saves ``{"model": ViFiCLIP.state_dict(), ...}``; its ``image_encoder`` is OpenAI CLIP's
    ``VisionTransformer``, whose parameter names open_clip's ``visual`` tower shares. A ``module.`` prefix (saved
    from DistributedDataParallel) is dropped. A bare state dict is accepted too.

    Raises
    ------
    ValueError
        If no ``image_encoder.`` weights are found.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: expected a ViFi-CLIP checkpoint (a dict with a 'model' state dict), got {type(checkpoint).__name__}."
        )
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("image_encoder."):
            out[key.removeprefix("image_encoder.")] = value
    if not out:
        raise ValueError(
            f"{path}: expected ViFi-CLIP weights named 'image_encoder.*' (ViFiCLIP.image_encoder), found none among "
            f"{len(state)} keys (e.g. {sorted(state)[:3]})."
        )
    return out


def load_vifi(device: str = "cpu", pretrained: bool = True) -> ImageTextEncoder:
    """ViFi-CLIP ViT-B/16 (Rasheed et al. 2023, fine-tuned on Kinetics-400): the VIFI score's model (reference A.6).

    Only the image tower is used (video feature = mean of frame features). The text tower stays OpenAI CLIP's
    architecture with random weights: the VIFI score never reads it. Frames are resized to 256 × 256 and centre-
    cropped to 224 with ImageNet normalisation, as the published test pipeline does.

    Raises
    ------
    BackboneUnavailableError
        If ``pretrained`` and the checkpoint is not at :func:`vifi_checkpoint_path`, or cannot be read as tensors.
    ValueError
        If the checkpoint's image weights do not fit the architecture.
    """
    import open_clip

    src = load_registry().vifi
    path = vifi_checkpoint_path(src)
    if pretrained and not path.is_file():
        raise BackboneUnavailableError(
            f"vifi: cannot load the full-tier weights ViFi-CLIP {src.arch} ({src.checkpoint}): no file at {path}. "
            f"To get them, download {src.checkpoint} from {src.source_url} (ViFi-CLIP's model zoo) on a machine "
            f"with network access, copy it to {path} or set {src.checkpoint_env} to its path; or use tier demo."
        )
    model = open_clip.create_model(src.arch, pretrained=None, force_quick_gelu=src.quick_gelu, device="cpu")
    name = f"full:ViFi-CLIP-{src.arch}/{Path(src.checkpoint).stem if pretrained else 'random'}"
    if pretrained:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickle errors have no common type; the message names it
            raise BackboneUnavailableError(
                f"vifi: cannot read {path} as tensors only ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                f"If the file holds more than weights (a training config), extract the state dict once from a copy "
                f"you trust: python -c \"import torch; c = torch.load('{path}', weights_only=False); "
                f"torch.save(c['model'], '{path}.weights.pt')\" and point {src.checkpoint_env} to the new file."
            ) from err
        missing, unexpected = model.visual.load_state_dict(vifi_image_state(checkpoint, path), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: expected the image tower of {src.arch} (open_clip names), got {len(missing)} missing "
                f"(e.g. {missing[:3]}) and {len(unexpected)} unexpected (e.g. {unexpected[:3]}) weights."
            )
    return ImageTextEncoder(
        model=model.to(device).eval(),
        tokenizer=open_clip.get_tokenizer(src.arch),
        image_size=src.image_size,
        mean=src.mean,
        std=src.std,
        name=name,
        resize_size=src.resize_size,
    )


def _cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """Path of the first of ``filenames`` in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache_dir())
        if isinstance(path, str):
            return path
    return None


def load_vae(device: str = "cpu", pretrained: bool = True) -> LatentAutoencoder:
    """Stable Diffusion 1.5's ``AutoencoderKL`` (subfolder ``vae``); 512-px frames → latents (n, 4, 64, 64).

    Parameters and errors as :func:`load_clip`.
    """
    from diffusers import AutoencoderKL

    src = load_registry().vae
    if pretrained:
        model = _from_hub(
            "vae",
            AutoencoderKL,
            src.repo_id,
            src.revision,
            _hub_offline(),
            subfolder=src.subfolder,
            torch_dtype=torch.float32,
        )
        name = _weights_name(src.arch, src.repo_id, src.revision)
    else:
        model = AutoencoderKL.from_config(read_architecture(src.architecture))
        name = f"full:{src.arch}/random"
    return LatentAutoencoder(model=model.to(device).eval(), image_size=src.image_size, name=name)


def load_renderer(device: str = "cpu", pretrained: bool = True) -> Renderer:
    """Stable Diffusion 1.5's ``UNet2DConditionModel`` with its CLIP text encoder as ``condition``.

    ``condition(captions)`` is the last hidden state of SD 1.5's ``CLIPTextModel`` over 77 tokens padded with
    <|endoftext|>: an array of shape (n_captions, 77, 768), the UNet's ``encoder_hidden_states``.

    With ``pretrained=False`` the tokenizer files cannot be read offline either, so the random-weight wiring uses a
    documented fallback: the same CLIP BPE from open_clip's bundled vocabulary (``_OpenClipBpeTokenizer``).

    Parameters and errors as :func:`load_clip`.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    src = load_registry().unet
    if pretrained:
        offline = _hub_offline()
        load = functools.partial(_from_hub, "unet", revision=src.revision, offline=offline)
        text_encoder = load(CLIPTextModel, src.repo_id, subfolder=src.text_encoder_subfolder, dtype=torch.float32)
        tokenizer = load(CLIPTokenizer, src.repo_id, subfolder=src.tokenizer_subfolder)
        what = f"{src.repo_id} (CLIPTokenizer, subfolder {src.tokenizer_subfolder})"
        _check_vocabulary("unet", what, tokenizer, text_encoder.config.vocab_size, offline)
        unet = load(UNet2DConditionModel, src.repo_id, subfolder=src.subfolder, torch_dtype=torch.float32)
        tokenize: Callable[[list[str]], torch.Tensor] = _PaddedClipTokenizer(tokenizer, src.max_length)
        name = _weights_name(src.arch, src.repo_id, src.revision)
    else:
        text_encoder = CLIPTextModel(CLIPTextConfig(**read_architecture(src.text_encoder_architecture)))
        tokenize = _OpenClipBpeTokenizer(src.max_length)
        unet = UNet2DConditionModel.from_config(read_architecture(src.architecture))
        name = f"full:{src.arch}/random"
    condition = TextConditioner(text_encoder=text_encoder.to(device).eval(), tokenize=tokenize)
    return Renderer(unet=unet.to(device).eval(), condition=condition, name=name)


def load_raft(device: str = "cpu", pretrained: bool = True) -> FlowEstimator:
    """torchvision ``raft_large`` with ``Raft_Large_Weights.C_T_SKHT_V2`` (its DEFAULT), 12 flow updates.

    Parameters and errors as :func:`load_clip` (the weights come through the torch cache, TORCH_HOME).
    """
    src = load_registry().raft
    model = _torchvision_model("raft", src.arch, src.weights, pretrained)
    name = f"full:{src.arch}/{src.weights.split('.')[-1] if pretrained else 'random'}"
    return FlowEstimator(model=model.to(device).eval(), num_flow_updates=src.num_flow_updates, name=name)


def load_frame_classifier(device: str = "cpu", pretrained: bool = True) -> Classifier:
    """torchvision ``vit_b_16`` with ``ViT_B_16_Weights.IMAGENET1K_V1``: frames → 1000 ImageNet logits.

    Preprocessing is the weights' documented one, done in ``forward`` (:func:`preprocess_frames`): shorter edge to
    256 (bilinear), centre crop 224, ImageNet mean/std. Labels are the weights' ``meta["categories"]``, which ship
    inside torchvision, so the random-weight classifier has them too.

    Parameters and errors as :func:`load_clip` (the weights come through the torch cache, TORCH_HOME).
    """
    import torchvision

    src = load_registry().frame_classifier
    model = _torchvision_model("frame_classifier", src.arch, src.weights, pretrained)
    forward = functools.partial(
        _classify_frames, resize_size=src.resize_size, crop_size=src.crop_size, mean=src.mean, std=src.std
    )
    return Classifier(
        model=model.to(device).eval(),
        labels=tuple(torchvision.models.get_weight(src.weights).meta["categories"]),
        forward=forward,
        name=f"full:{src.arch}/{src.weights.split('.')[-1] if pretrained else 'random'}",
    )


def load_video_classifier(device: str = "cpu", pretrained: bool = True) -> Classifier:
    """VideoMAE-base fine-tuned on Kinetics-400 (``MCG-NJU/videomae-base-finetuned-kinetics``): 400 logits.

    ``logits`` takes videos of shape (n_videos, n_frames, height, width, 3), uint8. Clips of another length than
    16 frames are resampled to 16 uniformly spaced frames (:func:`sample_frame_indices`); frames get the shorter
    edge resized to 224, a 224 centre crop and the normalisation of the repo's ``preprocessor_config.json``
    (``pretrained=False``: the registry's, VideoMAE's ImageNet mean/std). Labels come from the config's
    ``id2label``; with random weights, from torchvision's bundled Kinetics-400 category list (alphabetical, the
    standard class-index order).

    Parameters and errors as :func:`load_clip`.
    """
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    src = load_registry().video_classifier
    if pretrained:
        offline = _hub_offline()
        load = functools.partial(
            _from_hub, "video_classifier", repo_id=src.repo_id, revision=src.revision, offline=offline
        )
        processor = load(VideoMAEImageProcessor)
        model = load(VideoMAEForVideoClassification, dtype=torch.float32)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        name = _weights_name(src.arch, src.repo_id, src.revision)
    else:
        from torchvision.models.video import R3D_18_Weights

        config = VideoMAEConfig(**read_architecture(src.architecture))
        config.id2label = dict(enumerate(R3D_18_Weights.KINETICS400_V1.meta["categories"]))
        config.label2id = {label: i for i, label in config.id2label.items()}
        model = VideoMAEForVideoClassification(config)
        mean, std = src.mean, src.std
        name = f"full:{src.arch}/random"
    forward = functools.partial(
        _classify_videos,
        num_frames=model.config.num_frames,
        resize_size=src.resize_size,
        crop_size=src.crop_size,
        mean=mean,
        std=std,
    )
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    return Classifier(model=model.to(device).eval(), labels=labels, forward=forward, name=name)


def load_captioner(device: str = "cpu", pretrained: bool = True) -> Captioner:
    """BLIP-2 OPT-2.7b (``Salesforce/blip2-opt-2.7b``), prompt-free captions as NeuroClips makes them.

    Mind-Animator's alternative (BLIP-2 FlanT5-XXL with the prompt "Question: What does this image describe?
    Answer:") is not used: OPT-2.7b is the smaller model (3.8 B parameters, about 15 GB in float32).

    With ``pretrained=False`` the 3.8 B-parameter model is *not* built: a tiny ``Blip2Config``
    (``architectures/blip2_tiny.json``) with random weights stands in, so that the wiring (pixel values → generate
    → decode) is testable offline; its name is "full:blip2-tiny/random" and it has no processor.

    Parameters and errors as :func:`load_clip`.
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    src = load_registry().captioner
    if pretrained:
        offline = _hub_offline()
        load = functools.partial(_from_hub, "captioner", repo_id=src.repo_id, revision=src.revision, offline=offline)
        processor = load(Blip2Processor)
        _check_vocabulary("captioner", f"{src.repo_id} (Blip2Processor)", processor.tokenizer, OPT_VOCABULARY, offline)
        model = load(Blip2ForConditionalGeneration, dtype=torch.float32)
        mean, std = tuple(processor.image_processor.image_mean), tuple(processor.image_processor.image_std)
        name = _weights_name(src.arch, src.repo_id, src.revision)
    else:
        model = Blip2ForConditionalGeneration(Blip2Config(**read_architecture(src.random_architecture)))
        processor, mean, std = None, src.mean, src.std
        name = f"full:{src.random_arch}/random"
    return Captioner(
        model=model.to(device).eval(),
        processor=processor,
        name=name,
        mean=mean,
        std=std,
        max_new_tokens=src.max_new_tokens,
    )


LOADERS: dict[str, Callable[..., Any]] = {
    "clip": load_clip,
    "vae": load_vae,
    "unet": load_renderer,
    "raft": load_raft,
    "frame_classifier": load_frame_classifier,
    "video_classifier": load_video_classifier,
    "vifi": load_vifi,
    "captioner": load_captioner,
}


def load(role: str, device: str = "cpu", pretrained: bool = True) -> Any:
    """Load the full-tier backbone of ``role`` (one of backbones.ROLES, or "captioner").

    Raises
    ------
    ValueError
        If ``role`` is unknown.
    BackboneUnavailableError
        If ``pretrained`` and the weights cannot be had here.
    """
    if role not in LOADERS:
        raise ValueError(f"role: expected one of {list(LOADERS)}, got {role!r}.")
    return LOADERS[role](device=device, pretrained=pretrained)
