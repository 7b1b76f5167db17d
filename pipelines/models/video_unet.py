"""Tune-A-Video-style inflation of a diffusers ``UNet2DConditionModel`` into a video denoiser (the renderer).

Reference: ``methods_and_protocols.md`` C.1 ("Feature-to-video renderer": Mind-Animator inflates SD 1.x with
Tune-A-Video's ``from_pretrained_2d``) and C.2 (MinD-Video's augmented SD). :func:`inflate_unet` copies a 2-D UNet
and keeps its weights ("inflated from the 2-D model"); :class:`VideoUNet` runs the copy on clips of shape
(batch, channels, n_frames, height, width):

- Convolutions, ResNet blocks, GroupNorm, cross-attention and feed-forward layers run per frame: the frames are
  folded into the batch, frame index fastest.
- Every self-attention (``attn1`` of each ``BasicTransformerBlock``) is sparse-causal
  (:class:`SparseCausalAttnProcessor`): frame i's queries attend to the keys and values of frame 0 and of frame
  i − 1 (clamped at 0), concatenated along the token axis.
- With ``temporal=True`` every ``BasicTransformerBlock`` is followed by a residual, bidirectional attention across
  the frames at each spatial position (:class:`TemporalAttention`).

With all frames equal, or for frame 0 whatever the other frames are, the inflated model computes exactly what the
2-D model computes on that frame (up to float rounding), as long as the temporal layers are at their zero
initialisation.

Deviations, each explained where it is implemented:

- GroupNorm statistics are per frame. Tune-A-Video's ResNet blocks apply GroupNorm to the 5-D tensor, so their
  statistics pool all frames of a clip; per frame keeps each frame's normalisation what the 2-D model learned.
- The temporal attention's output projection is zero in weight *and* bias (:class:`TemporalAttention`).
- The temporal attention adds sinusoidal frame positions to its input (as AnimateDiff's motion modules do);
  Tune-A-Video adds none, which leaves its temporal attention blind to frame order.
- Only Tune-A-Video's sparse-causal pattern (first + previous frame) is implemented; MinD-Video's (frames t − 2 and
  t − 1, C.2) is not.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file
from torch import nn

from pipelines import __version__

UNET_DIR = "unet"  # diffusers save_pretrained of the 2-D weights
TEMPORAL_WEIGHTS = "temporal.safetensors"  # the added temporal layers (only when temporal=True)
VIDEO_CONFIG = "video_unet.json"  # {"temporal": bool, "position_encoding": ..., "code_version": ..., meta}
POSITION_ENCODING = "sinusoidal"
_UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")


# ----------------------------------------------------------------------------------------------------------------------
# sparse-causal self-attention


@dataclass
class FrameContext:
    """Mutable state shared by a :class:`VideoUNet` and its attention layers: the frames per clip of the current call.

    :meth:`VideoUNet.forward` sets ``n_frames`` before running the inner 2-D UNet, whose layers only see tensors of
    shape (batch · n_frames, ...). The value is left in place after the call, because gradient checkpointing
    recomputes the layers during ``backward``; run each backward before the next forward with another n_frames.
    """

    n_frames: int | None = None

    def frames(self) -> int:
        """The current n_frames; RuntimeError when no clip has been run yet."""
        if self.n_frames is None:
            raise RuntimeError(
                "The inflated UNet does not know the number of frames: call the VideoUNet on a clip of shape "
                "(batch, channels, n_frames, height, width), not its inner .unet on single frames."
            )
        return self.n_frames


def _first_and_previous(x: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Tokens of shape (batch · n_frames, n_tokens, dim) → (batch · n_frames, 2 · n_tokens, dim): frame 0's and frame
    i − 1's tokens (clamped at 0) for every frame i."""
    x = x.unflatten(0, (-1, n_frames))
    previous = (torch.arange(n_frames, device=x.device) - 1).clamp(min=0)
    first = x[:, :1].expand(-1, n_frames, -1, -1)
    return torch.cat([first, x[:, previous]], dim=2).flatten(0, 1)


class SparseCausalAttnProcessor:
    """A diffusers attention processor for self-attention: frame i attends to frames 0 and i − 1 (Tune-A-Video).

    Queries come from frame i itself; keys and values are the tokens of frame 0 followed by those of frame i − 1
    (frame 0 uses frame 0 twice, which gives the same softmax average as plain self-attention over frame 0). So a
    frame never sees later frames, and frame i sees frame i − 2 and earlier only through the layers below.

    Parameters
    ----------
    context : FrameContext
        Shared with the owning :class:`VideoUNet`, which sets the number of frames.
    """

    def __init__(self, context: FrameContext):
        self.context = context

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states of shape (batch · n_frames, n_tokens, dim) → the same shape."""
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(
                "SparseCausalAttnProcessor: expected self-attention without a mask, got "
                f"encoder_hidden_states={'set' if encoder_hidden_states is not None else None}, "
                f"attention_mask={'set' if attention_mask is not None else None}. Set it on attn1 only."
            )
        n_frames = self.context.frames()
        residual = hidden_states
        batch_frames, n_tokens, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        key = _first_and_previous(attn.to_k(hidden_states), n_frames)
        value = _first_and_previous(attn.to_v(hidden_states), n_frames)
        head_dim = query.shape[-1] // attn.heads
        query, key, value = (t.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch_frames, n_tokens, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# ----------------------------------------------------------------------------------------------------------------------
# temporal attention


def _frame_positions(n_frames: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """The transformer's sinusoidal position table: tensor of shape (n_frames, dim), dtype and device of ``like``."""
    position = torch.arange(n_frames, dtype=torch.float32, device=like.device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=like.device) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_frames, dim, device=like.device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.to(like.dtype)


class TemporalAttention(nn.Module):
    """x + Attention(LayerNorm(x) + frame positions) across the frames at each spatial position.

    Input and output are tokens of shape (batch · n_frames, n_tokens, dim), reshaped internally to
    (batch · n_tokens, n_frames, dim). The attention is bidirectional: every frame sees every frame of its clip.
    Sinusoidal frame positions (:func:`_frame_positions`, computed for any n_frames, nothing stored) are added to
    the normalised input, so queries, keys and values know the frame order.

    Deviation: the output projection ``attn.to_out[0]`` is zero in weight and bias, so the layer adds exactly zero
    until it is trained and an inflated model reproduces the 2-D model. Tune-A-Video zero-initialises the weight
    only, and Mind-Animator never trains these layers (C.1), so their random bias is added to every block's output.
    At zero initialisation only the output projection receives a gradient; the query, key and value projections
    start learning after the first update.

    Parameters
    ----------
    dim : int
        Token width (the transformer block's width).
    heads, dim_head : int
        Attention heads and their width (taken from the block's self-attention).
    bias : bool
        Whether the query, key and value projections have a bias.
    context : FrameContext
        Shared with the owning :class:`VideoUNet`.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, bias: bool, context: FrameContext):
        super().__init__()
        self.context = context
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim_head, bias=bias, out_bias=True)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = self.context.frames()
        batch_frames, n_tokens, dim = x.shape
        h = self.norm(x).unflatten(0, (-1, n_frames)).transpose(1, 2).reshape(-1, n_frames, dim)
        h = self.attn(h + _frame_positions(n_frames, dim, h))
        h = h.unflatten(0, (-1, n_tokens)).transpose(1, 2).reshape(batch_frames, n_tokens, dim)
        return x + h


class _WithTemporal(nn.Module):
    """A ``BasicTransformerBlock`` followed by a :class:`TemporalAttention` (same call signature as the block)."""

    def __init__(self, block: BasicTransformerBlock, temporal: TemporalAttention):
        super().__init__()
        self.block = block
        self.temporal = temporal

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.temporal(self.block(*args, **kwargs))


def _slots(module: nn.Module, kind: type) -> list[tuple[nn.ModuleList, int]]:
    """(list, index) of every ``kind`` held directly in a ``nn.ModuleList`` inside ``module``, in module order."""
    return [
        (parent, i)
        for parent in module.modules()
        if isinstance(parent, nn.ModuleList)
        for i, child in enumerate(parent)
        if isinstance(child, kind)
    ]


# ----------------------------------------------------------------------------------------------------------------------
# the video UNet


class VideoUNet(nn.Module):
    """A 2-D diffusers UNet run on clips: per-frame layers, sparse-causal self-attention, optional temporal attention.

    The constructor inflates ``unet`` in place (the VideoUNet takes ownership of it); :func:`inflate_unet` inflates
    a copy and leaves the 2-D model untouched. Do not reset the inner UNet's attention processors
    (``set_attn_processor``, xformers): that would turn the sparse-causal attention back into per-frame attention.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The 2-D denoiser; its weights become the video model's.
    temporal : bool
        Add a zero-initialised :class:`TemporalAttention` after every ``BasicTransformerBlock``.
    seed : int
        Seeds the initialisation of the temporal layers (the global random state is left as it was).

    Attributes
    ----------
    unet : UNet2DConditionModel
        The inflated inner UNet; it runs on frames folded into the batch.
    temporal : bool
    context : FrameContext
        The frame count shared with the attention layers.

    Raises
    ------
    TypeError
        If ``unet`` is not a ``UNet2DConditionModel`` or ``temporal`` not a bool.
    """

    def __init__(self, unet: UNet2DConditionModel, temporal: bool = True, seed: int = 0):
        if not isinstance(unet, UNet2DConditionModel):
            raise TypeError(f"unet: expected a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
        if not isinstance(temporal, bool):
            raise TypeError(f"temporal: expected a bool, got {type(temporal).__name__}.")
        super().__init__()
        self.context = FrameContext()
        self.temporal = temporal
        slots = _slots(unet, BasicTransformerBlock)
        for parent, i in slots:
            if not parent[i].only_cross_attention:  # attn1 is then a cross-attention to the text: stays per frame
                parent[i].attn1.set_processor(SparseCausalAttnProcessor(self.context))
        if temporal:
            with torch.random.fork_rng(devices=[]):  # layers are built on the CPU: only its generator is touched
                torch.default_generator.manual_seed(seed)
                for parent, i in slots:
                    parent[i] = _WithTemporal(parent[i], self._temporal_layer(parent[i]))
        self.unet = unet

    def _temporal_layer(self, block: BasicTransformerBlock) -> TemporalAttention:
        """A TemporalAttention as wide as ``block``, with its heads, on its device and dtype."""
        attn1 = block.attn1
        layer = TemporalAttention(
            attn1.query_dim, attn1.heads, attn1.inner_dim // attn1.heads, attn1.to_q.bias is not None, self.context
        )
        return layer.to(device=attn1.to_q.weight.device, dtype=attn1.to_q.weight.dtype)

    @property
    def config(self):
        """The inner 2-D UNet's diffusers config (``in_channels``, ``sample_size``, ``cross_attention_dim``, ...)."""
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        """The inner UNet's parameter dtype."""
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        """The inner UNet's device."""
        return self.unet.device

    def temporal_parameters(self) -> list[nn.Parameter]:
        """The parameters of the added temporal layers only (empty when ``temporal`` is False).

        Everything else is the 2-D model's and can stay frozen while these are fine-tuned on video (NeuroCine).
        """
        return [p for m in self.unet.modules() if isinstance(m, TemporalAttention) for p in m.parameters()]

    def _check_inputs(
        self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor
    ) -> None:
        c = self.config
        layout = f"(batch, channels={c.in_channels}, n_frames, height, width)"
        if not isinstance(sample, torch.Tensor):
            raise TypeError(f"sample: expected a torch.Tensor of shape {layout}, got {type(sample).__name__}.")
        if sample.ndim != 5 or sample.shape[1] != c.in_channels or 0 in sample.shape:
            raise ValueError(
                f"sample: expected a tensor of shape {layout}, got shape {tuple(sample.shape)}. Put the frames on "
                "axis 2: x.permute(0, 2, 1, 3, 4) turns (batch, n_frames, channels, h, w) into this layout."
            )
        batch = sample.shape[0]
        if isinstance(timestep, torch.Tensor):
            if not (timestep.ndim == 0 or tuple(timestep.shape) == (batch,)):
                raise ValueError(
                    f"timestep: expected a scalar or a tensor of shape ({batch},) (one per clip), got shape "
                    f"{tuple(timestep.shape)}."
                )
        elif isinstance(timestep, bool) or not isinstance(timestep, int | float):
            raise TypeError(f"timestep: expected a number or a tensor, got {type(timestep).__name__}.")
        if not isinstance(encoder_hidden_states, torch.Tensor):
            raise TypeError(
                f"encoder_hidden_states: expected a torch.Tensor, got {type(encoder_hidden_states).__name__}."
            )
        dim = c.cross_attention_dim if isinstance(c.cross_attention_dim, int) else None
        shape = encoder_hidden_states.shape
        if encoder_hidden_states.ndim != 3 or shape[0] != batch or (dim is not None and shape[2] != dim):
            raise ValueError(
                f"encoder_hidden_states: expected a tensor of shape ({batch}, n_tokens, {dim or 'dim'}) (one token "
                f"sequence per clip, shared by its frames), got shape {tuple(shape)}."
            )

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """Predict the noise of a batch of clip latents.

        Parameters
        ----------
        sample : tensor of shape (batch, channels, n_frames, height, width)
            Noisy latents; ``channels`` = ``config.in_channels``.
        timestep : int, float, scalar tensor or tensor of shape (batch,)
            Diffusion timestep, shared by all frames of a clip.
        encoder_hidden_states : tensor of shape (batch, n_tokens, dim)
            Text conditioning, one sequence per clip (repeated for each frame); ``dim`` = ``cross_attention_dim``.

        Returns
        -------
        tensor of shape (batch, out_channels, n_frames, height, width)
            The UNet's prediction (the sample's shape when ``out_channels`` = ``in_channels``).

        Raises
        ------
        ValueError, TypeError
            If a shape or type does not match.
        """
        self._check_inputs(sample, timestep, encoder_hidden_states)
        batch, _, n_frames = sample.shape[:3]
        frames = sample.transpose(1, 2).flatten(0, 1)  # (batch · n_frames, channels, h, w), frame index fastest
        if isinstance(timestep, torch.Tensor) and timestep.ndim == 1:
            timestep = timestep.repeat_interleave(n_frames)
        tokens = encoder_hidden_states.repeat_interleave(n_frames, dim=0)
        self.context.n_frames = n_frames
        out = self.unet(frames, timestep, encoder_hidden_states=tokens, return_dict=False)[0]
        return out.unflatten(0, (batch, n_frames)).transpose(1, 2).contiguous()

    # ------------------------------------------------------------------------------------------------------------------
    # save / load

    def _temporal_state(self) -> dict[str, torch.Tensor]:
        """The temporal layers' tensors, keyed by their names in the inner UNet's state dict."""
        return {
            f"{name}.{key}": value
            for name, module in self.unet.named_modules()
            if isinstance(module, TemporalAttention)
            for key, value in module.state_dict().items()
        }

    @contextmanager
    def _as_2d(self) -> Iterator[UNet2DConditionModel]:
        """The inner UNet with its temporal wrappers taken out (the 2-D module tree and state-dict keys)."""
        slots = _slots(self.unet, _WithTemporal)
        wrappers = [parent[i] for parent, i in slots]
        try:
            for (parent, i), wrapper in zip(slots, wrappers, strict=True):
                parent[i] = wrapper.block
            yield self.unet
        finally:
            for (parent, i), wrapper in zip(slots, wrappers, strict=True):
                parent[i] = wrapper

    def save_pretrained(self, directory: str | Path, meta: dict | None = None) -> Path:
        """Write ``unet/`` (the 2-D weights, diffusers format), ``temporal.safetensors`` and ``video_unet.json``.

        ``unet/`` loads on its own as a plain ``UNet2DConditionModel``; ``temporal.safetensors`` is written only when
        ``temporal`` is True.

        Parameters
        ----------
        directory : str or Path
            Created if missing.
        meta : dict, optional
            JSON-serialisable extras for ``video_unet.json`` (e.g. the hash of the training data).

        Returns
        -------
        Path
            ``directory``.

        Raises
        ------
        ValueError
            If ``meta`` uses a key this method writes.
        """
        meta = dict(meta or {})
        reserved = sorted({"temporal", "position_encoding"} & meta.keys())
        if reserved:
            raise ValueError(f"meta: expected no keys named {reserved}; save_pretrained writes them itself.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._as_2d() as unet:
            unet.save_pretrained(directory / UNET_DIR, safe_serialization=True)
        if self.temporal:
            state = {k: v.detach().contiguous().cpu() for k, v in self._temporal_state().items()}
            save_file(state, directory / TEMPORAL_WEIGHTS)
        saved = {"temporal": self.temporal, "position_encoding": POSITION_ENCODING, "code_version": __version__, **meta}
        (directory / VIDEO_CONFIG).write_text(json.dumps(saved, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> VideoUNet:
        """Rebuild a VideoUNet from a folder written by :meth:`save_pretrained` (eval mode).

        Raises
        ------
        FileNotFoundError
            If ``video_unet.json``, ``unet/`` or ``temporal.safetensors`` (when needed) is missing.
        ValueError
            If ``video_unet.json`` or the temporal weights do not match this code.
        """
        directory = Path(directory)
        config_path = directory / VIDEO_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} does not exist; expected a folder written by VideoUNet.save_pretrained."
            )
        saved = json.loads(config_path.read_text())
        temporal = saved.get("temporal")
        if not isinstance(temporal, bool):
            raise ValueError(f"{config_path}: expected 'temporal' to be true or false, got {temporal!r}.")
        if saved.get("position_encoding") != POSITION_ENCODING:
            raise ValueError(
                f"{config_path}: expected position_encoding {POSITION_ENCODING!r}, got "
                f"{saved.get('position_encoding')!r}; it was written by other code."
            )
        unet_dir = directory / UNET_DIR
        if not (unet_dir / "config.json").is_file() or not any((unet_dir / n).is_file() for n in _UNET_WEIGHTS):
            raise FileNotFoundError(
                f"{unet_dir} does not hold config.json and {_UNET_WEIGHTS[0]}; VideoUNet.save_pretrained writes the "
                "2-D weights there (diffusers save_pretrained)."
            )
        model = cls(UNet2DConditionModel.from_pretrained(unet_dir), temporal=temporal)
        if temporal:
            model._load_temporal(directory / TEMPORAL_WEIGHTS)
        return model.to(device).eval()

    def _load_temporal(self, path: Path) -> None:
        """Load ``temporal.safetensors`` into the temporal layers; every key must match."""
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; VideoUNet.save_pretrained writes the temporal layers there when "
                f"temporal=True (as {VIDEO_CONFIG} says)."
            )
        state = load_file(path)
        expected = self._temporal_state().keys()
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match the inflated UNet: missing {missing[:3]}, unexpected {unexpected[:3]}."
            )
        try:
            self.unet.load_state_dict(state, strict=False)
        except RuntimeError as err:  # tensor shapes differ
            raise ValueError(f"{path} does not match the inflated UNet: {err}") from err


def inflate_unet(unet: UNet2DConditionModel, temporal: bool = True, seed: int = 0) -> VideoUNet:
    """Inflate a copy of a 2-D UNet into a :class:`VideoUNet`; ``unet`` itself is left unchanged.

    Parameters
    ----------
    unet : UNet2DConditionModel
        The 2-D denoiser whose weights the video model starts from.
    temporal : bool
        Add zero-initialised temporal attention after every transformer block.
    seed : int
        Seeds the temporal layers' initialisation.

    Returns
    -------
    VideoUNet
        On ``unet``'s device and dtype, in ``unet``'s train/eval mode.

    Raises
    ------
    TypeError
        If ``unet`` is not a ``UNet2DConditionModel`` or ``temporal`` not a bool.
    """
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"unet: expected a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
    return VideoUNet(copy.deepcopy(unet), temporal=temporal, seed=seed).train(unet.training)
