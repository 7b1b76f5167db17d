"""NeuroCine's fMRI encoder: a transformer over voxel-patch tokens of a TR window, trained with spatial masking,
temporal interpolation and a contrastive loss in CLIP space.

Reference: ``methods_and_protocols.md`` C.5 (NeuroCine, abstract only, no code) and C.2 (MinD-Video's 1-D fMRI ViT:
Conv1d patch embedding with kernel = stride = 16, fixed 1-D sin-cos positions, a token-axis Linear to the UNet's
context). What is fixed here is this project's design, stated so it can be compared:

- Tokens. The voxel vector of each TR is zero-padded to a multiple of ``patch_size`` and cut into patches
  (:func:`patchify`); a token is one patch *across all TRs of the window* (window·patch_size values → Linear →
  d_model). One attention over space then gives one (tokens × tokens) map per layer, which maps straight back to
  voxels (:func:`attention_to_voxels`) for the cortical-surface view. MinD-Video instead alternates spatial and
  temporal attention; folding the window into the token is ``window`` times cheaper at demo scale.
- L_spa (spatial masking, :func:`pipelines.models.augment.spatial_mask`): masked token positions are replaced by a
  learned mask token and a linear head reconstructs their voxels (MAE-style), averaged over masked tokens only.
- L_tem (temporal interpolation, :func:`pipelines.models.augment.temporal_interpolate`): the same head reconstructs
  the original voxels of the interpolated TRs.
- L_emb: α·InfoNCE_sym(embedding, CLIP text) + (1 − α)·InfoNCE_sym(embedding, CLIP image) on the pooled tokens
  (the abstract names "contrastive fMRI representation learning" without its targets; these are MinD-Video's).
  ``pool="mean"`` averages the tokens. Every token shares one patch embedding, so the mean gives voxel k of every
  patch the same weight in the linear part of the embedding. ``pool="mixer"`` uses a token-axis Linear (n_tokens →
  ``n_pool``), as MinD-Video maps its tokens to the UNet's context and this encoder maps them to its conditioning:
  each voxel patch gets its own weight.
- The linear read-out (``readout_rank`` > 0, not in NeuroCine or MinD-Video): the embedding also gets a rank-limited
  Linear of the raw window (window·n_voxels → readout_rank → embed_dim), beside the transformer, whose embedding
  head then starts at zero. :meth:`FMRIEncoder.set_readout` starts it at a linear map, e.g. the ridge baseline
  fitted on training clips, so the encoder begins as that baseline and the transformer learns what it misses. The
  simulated voxels code their features linearly, and the transformer alone stays below ridge (README, "Stage-1
  decoders"). Masked token positions are zero on this path. It feeds the contrastive embedding only; the
  conditioning tokens come from the transformer as before.
- The conditioning projection (token-axis Linear, then Linear, GELU, Linear with a residual, as MinD-Video) is
  trained by MSE to the renderer's text-conditioning tokens, so that the encoder can drive the same renderer as the
  other methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.checks import check_positive, check_shape
from pipelines.models.io import SavesPretrained
from pipelines.models.mind_animator import set_low_rank, symmetric_info_nce

POOLS = ("mean", "mixer")  # how FMRIEncoder pools its tokens into the CLIP-space embedding


def n_patches(n_voxels: int, patch_size: int) -> int:
    """Number of tokens of a voxel vector: ceil(n_voxels / patch_size)."""
    return -(-n_voxels // patch_size)


def patchify(fmri: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut voxel vectors into patches, zero-padding the end to a multiple of ``patch_size``.

    Parameters
    ----------
    fmri : tensor of shape (..., n_voxels)
        E.g. (batch, window, n_voxels).
    patch_size : int

    Returns
    -------
    tensor of shape (..., n_tokens, patch_size), n_tokens = ceil(n_voxels / patch_size)
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size: expected a positive integer, got {patch_size!r}.")
    n_voxels = fmri.shape[-1]
    padded = F.pad(fmri, (0, n_patches(n_voxels, patch_size) * patch_size - n_voxels))
    return padded.unflatten(-1, (-1, patch_size))


def unpatchify(tokens: torch.Tensor, n_voxels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (..., n_tokens, patch_size) → (..., n_voxels), dropping the padding."""
    n_tokens, patch_size = tokens.shape[-2:]
    if n_patches(n_voxels, patch_size) != n_tokens:
        raise ValueError(
            f"tokens: expected {n_patches(n_voxels, patch_size)} tokens of {patch_size} for {n_voxels} voxels, "
            f"got {n_tokens}."
        )
    return tokens.flatten(-2)[..., :n_voxels]


def _sincos(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sin-cos position table: tensor of shape (n_positions, dim), dim even."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    return torch.cat([torch.sin(position * freq), torch.cos(position * freq)], dim=1)


@dataclass(frozen=True)
class FMRIEncoderConfig:
    """Architecture of the NeuroCine fMRI encoder (reference C.5, with MinD-Video's C.2 values in comments)."""

    n_voxels: int = 4500  # fMRI vector length per TR
    window: int = 3  # TRs per input window (MinD-Video: 2)
    patch_size: int = 16  # voxels per token (MinD-Video: 16)
    d_model: int = 128  # token width (MinD-Video: 1024)
    depth: int = 4  # transformer blocks (MinD-Video: 24)
    n_heads: int = 4  # attention heads (MinD-Video: 16)
    mlp_dim: int = 512  # MLP hidden width (MinD-Video: 4 x d_model)
    dropout: float = 0.1  # residual dropout
    attn_dropout: float = 0.0  # attention-weight dropout
    embed_dim: int = 128  # CLIP space of the contrastive loss (demo CLIP: 128)
    n_cond_tokens: int = 32  # renderer conditioning tokens (demo CLIP context_length: 32)
    cond_dim: int = 128  # renderer conditioning width (demo CLIP text width: 128)
    pool: str = "mean"  # embedding from: "mean" (the mean token) or "mixer" (token-axis Linear to n_pool, then Linear)
    n_pool: int = 8  # token-axis outputs of the "mixer" pool
    readout_rank: int = 0  # > 0: + a rank-limited Linear of the raw window to embed_dim (not in C.2 / C.5)


class FMRIEncoderOutput(NamedTuple):
    """What :class:`FMRIEncoder` returns."""

    tokens: torch.Tensor  # (batch, n_tokens, d_model): final token states
    embedding: torch.Tensor  # (batch, embed_dim): pooled, projected to CLIP space (not normalised)
    conditioning: torch.Tensor  # (batch, n_cond_tokens, cond_dim): the renderer's conditioning tokens
    reconstruction: torch.Tensor  # (batch, window, n_tokens, patch_size): predicted voxels of every token and TR
    attention: list[torch.Tensor] | None  # per layer (batch, n_heads, n_tokens, n_tokens), if asked for


class _Attention(nn.Module):
    """Multi-head self-attention that can return its weights (softmax rows, before dropout)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, return_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if return_attention:
            weights = (q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)).softmax(dim=-1)
            out = F.dropout(weights, p, self.training) @ v
        else:
            weights, out = None, F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), weights


class _Block(nn.Module):
    """Pre-norm transformer encoder block."""

    def __init__(self, c: FMRIEncoderConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = _Attention(c.d_model, c.n_heads, c.attn_dropout)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, c.mlp_dim), nn.GELU(), nn.Linear(c.mlp_dim, c.d_model))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, return_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.norm2(x))), weights


class FMRIEncoder(SavesPretrained, nn.Module):
    """Transformer over voxel-patch tokens of a TR window → CLIP embedding, conditioning tokens, reconstruction.

    Layout: :func:`patchify` → per token Linear(window·patch_size → d_model) (a learned mask token replaces masked
    positions) + fixed sin-cos positions → ``depth`` pre-norm blocks → LayerNorm. Heads: mean pool (or the
    token-axis ``pool_mixer``) → Linear to ``embed_dim``; token-axis Linear (n_tokens → n_cond_tokens) →
    Linear(d_model → cond_dim) → GELU → Linear with a residual; Linear(d_model → window·patch_size) for
    reconstruction. With ``readout_rank`` > 0 the embedding adds a rank-limited Linear of the raw window
    (:meth:`set_readout`). A learnable logit scale (log(1/0.07)) serves :func:`embedding_loss`. Design choices and
    deviations: see the module docstring.
    """

    CONFIG = FMRIEncoderConfig

    def __init__(self, config: FMRIEncoderConfig):
        super().__init__()
        c = config
        for name in ("n_voxels", "window", "patch_size", "d_model", "depth", "n_heads", "mlp_dim", "embed_dim"):
            check_positive(c, name)
        check_positive(c, "n_cond_tokens")
        check_positive(c, "cond_dim")
        check_positive(c, "n_pool")
        if isinstance(c.readout_rank, bool) or not isinstance(c.readout_rank, int) or c.readout_rank < 0:
            raise ValueError(f"FMRIEncoderConfig.readout_rank: expected an integer >= 0, got {c.readout_rank!r}.")
        if c.pool not in POOLS:
            raise ValueError(f"FMRIEncoderConfig.pool: expected one of {list(POOLS)}, got {c.pool!r}.")
        if c.d_model % c.n_heads or c.d_model % 2:
            raise ValueError(
                f"FMRIEncoderConfig.d_model: expected an even multiple of n_heads={c.n_heads}, got {c.d_model}."
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(c, name) < 1.0:
                raise ValueError(
                    f"FMRIEncoderConfig.{name}: expected a probability in [0, 1), got {getattr(c, name)!r}."
                )
        self.config = config
        self.n_tokens = n_patches(c.n_voxels, c.patch_size)
        token_in = c.window * c.patch_size
        self.patch_embed = nn.Linear(token_in, c.d_model)
        self.mask_token = nn.Parameter(torch.zeros(c.d_model))
        self.register_buffer("positions", _sincos(self.n_tokens, c.d_model), persistent=False)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.d_model)
        if c.pool == "mixer":  # position-aware: each voxel patch gets its own weight in the embedding
            self.pool_mixer = nn.Linear(self.n_tokens, c.n_pool)
        self.embed_head = nn.Linear(c.d_model * (c.n_pool if c.pool == "mixer" else 1), c.embed_dim)
        self.token_mixer = nn.Linear(self.n_tokens, c.n_cond_tokens)
        self.cond_in = nn.Linear(c.d_model, c.cond_dim)
        self.cond_mlp = nn.Sequential(nn.GELU(), nn.Linear(c.cond_dim, c.cond_dim))
        self.recon_head = nn.Linear(c.d_model, token_in)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.mask_token, std=0.02)
        if c.readout_rank:  # the transformer's embedding starts silent: the embedding is the read-out until trained
            self.readout_in = nn.Linear(c.window * c.n_voxels, c.readout_rank, bias=False)
            self.readout_out = nn.Linear(c.readout_rank, c.embed_dim)
            nn.init.zeros_(self.embed_head.weight)
            nn.init.zeros_(self.embed_head.bias)

    def set_readout(self, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray) -> None:
        """Make the linear read-out (``readout_rank``) the best approximation of that rank of a linear map.

        Parameters
        ----------
        weight : array of shape (embed_dim, window·n_voxels)
            Applied to the window flattened TR by TR, e.g. the ridge baseline fitted on training clips; or a pair of
            factors whose product it is (:func:`~pipelines.models.mind_animator.set_low_rank`).
        bias : array of shape (embed_dim,)

        Raises
        ------
        ValueError
            If the encoder has no read-out or a shape differs.
        """
        c = self.config
        if not c.readout_rank:
            raise ValueError("set_readout: expected an encoder built with readout_rank > 0, got readout_rank=0.")
        set_low_rank(self.readout_in, self.readout_out, weight, bias)

    def readout_parameters(self) -> list[nn.Parameter]:
        """The linear read-out's parameters (none without ``readout_rank``)."""
        if not self.config.readout_rank:
            return []
        return [*self.readout_in.parameters(), *self.readout_out.parameters()]

    def patchify(self, fmri: torch.Tensor) -> torch.Tensor:
        """(batch, window, n_voxels) → (batch, window, n_tokens, patch_size) with this encoder's patch size."""
        c = self.config
        check_shape(fmri, "fmri", (None, c.window, c.n_voxels), f"(batch, {c.window}, {c.n_voxels})")
        return patchify(fmri, c.patch_size)

    def forward(
        self, fmri: torch.Tensor, token_mask: torch.Tensor | None = None, return_attention: bool = False
    ) -> FMRIEncoderOutput:
        """Encode a batch of TR windows.

        Parameters
        ----------
        fmri : tensor of shape (batch, window, n_voxels), or already patchified (batch, window, n_tokens, patch_size)
            E.g. the output of :func:`pipelines.models.augment.spatial_mask` /
            :func:`pipelines.models.augment.temporal_interpolate`.
        token_mask : bool tensor of shape (batch, n_tokens), optional
            True where a token position was masked; those tokens are replaced by the learned mask token.
        return_attention : bool
            Also return each layer's attention weights.

        Returns
        -------
        FMRIEncoderOutput

        Raises
        ------
        ValueError
            If a shape does not match the config.
        """
        c, n = self.config, self.n_tokens
        if isinstance(fmri, torch.Tensor) and fmri.ndim == 4:
            layout = f"(batch, {c.window}, {n}, {c.patch_size})"
            check_shape(fmri, "fmri", (None, c.window, n, c.patch_size), layout)
            patches = fmri
        else:
            patches = self.patchify(fmri)
        b = len(patches)
        x = self.patch_embed(patches.permute(0, 2, 1, 3).reshape(b, n, -1))
        if token_mask is not None:
            check_shape(token_mask, "token_mask", (b, n), f"({b}, {n})")
            if token_mask.dtype != torch.bool:
                raise ValueError(f"token_mask: expected a bool tensor (True = masked), got dtype {token_mask.dtype}.")
            x = torch.where(token_mask[..., None], self.mask_token.to(x.dtype), x)
        x = x + self.positions
        attention = [] if return_attention else None
        for block in self.blocks:
            x, weights = block(x, return_attention)
            if return_attention:
                attention.append(weights)
        tokens = self.norm(x)
        if c.pool == "mixer":
            pooled = self.pool_mixer(tokens.transpose(1, 2)).flatten(1)  # (batch, d_model · n_pool)
        else:
            pooled = tokens.mean(dim=1)
        embedding = self.embed_head(pooled)
        if c.readout_rank:  # the raw window, masked positions at zero
            visible = patches if token_mask is None else patches * ~token_mask[:, None, :, None]
            embedding = embedding + self.readout_out(self.readout_in(unpatchify(visible, c.n_voxels).flatten(1)))
        cond = self.cond_in(self.token_mixer(tokens.transpose(1, 2)).transpose(1, 2))
        conditioning = cond + self.cond_mlp(cond)
        recon = self.recon_head(tokens).view(b, n, c.window, c.patch_size).permute(0, 2, 1, 3)
        return FMRIEncoderOutput(tokens, embedding, conditioning, recon, attention)


# ----------------------------------------------------------------------------------------------------------------------
# losses


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``weight`` (broadcast to ``pred``) is 1; 0 if there are none."""
    weight = weight.to(pred.dtype).expand_as(pred)
    total = weight.sum()
    return ((pred - target).square() * weight).sum() / total.clamp(min=1.0)


def _check_recon(reconstruction: torch.Tensor, target: torch.Tensor) -> None:
    check_shape(reconstruction, "reconstruction", (None,) * 4, "(batch, window, n_tokens, patch_size)")
    check_shape(target, "target", tuple(reconstruction.shape), f"{tuple(reconstruction.shape)} like reconstruction")


def spatial_loss(reconstruction: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """L_spa: MSE of the reconstructed voxels of the masked token positions (every TR), 0 if none is masked.

    Parameters
    ----------
    reconstruction, target : tensors of shape (batch, window, n_tokens, patch_size)
        The encoder's reconstruction and the patchified fMRI before augmentation.
    token_mask : bool tensor of shape (batch, n_tokens)
        From :func:`pipelines.models.augment.spatial_mask`.

    Returns
    -------
    scalar tensor
    """
    _check_recon(reconstruction, target)
    b, _, n, _ = reconstruction.shape
    check_shape(token_mask, "token_mask", (b, n), f"({b}, {n})")
    return _masked_mse(reconstruction, target, token_mask[:, None, :, None])


def temporal_loss(reconstruction: torch.Tensor, target: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """L_tem: MSE of the reconstructed voxels of the interpolated TRs (every token), 0 if none was replaced.

    Parameters
    ----------
    reconstruction, target : tensors of shape (batch, window, n_tokens, patch_size)
        The encoder's reconstruction and the patchified fMRI before augmentation.
    replaced : bool tensor of shape (batch, window)
        From :func:`pipelines.models.augment.temporal_interpolate`.

    Returns
    -------
    scalar tensor
    """
    _check_recon(reconstruction, target)
    b, w = reconstruction.shape[:2]
    check_shape(replaced, "replaced", (b, w), f"({b}, {w})")
    return _masked_mse(reconstruction, target, replaced[:, :, None, None])


def embedding_loss(
    embedding: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    alpha: float = 0.5,
) -> torch.Tensor:
    """L_emb: α·InfoNCE_sym(embedding, text) + (1 − α)·InfoNCE_sym(embedding, image); tensors (batch, embed_dim)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha!r}.")
    return alpha * symmetric_info_nce(embedding, text_emb, logit_scale) + (1 - alpha) * symmetric_info_nce(
        embedding, image_emb, logit_scale
    )


class NeuroCineLoss(NamedTuple):
    """The encoder's total loss and its parts (scalar tensors)."""

    total: torch.Tensor
    spatial: torch.Tensor
    temporal: torch.Tensor
    embedding: torch.Tensor
    conditioning: torch.Tensor


def neurocine_loss(
    output: FMRIEncoderOutput,
    target: torch.Tensor,
    token_mask: torch.Tensor,
    replaced: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    cond_true: torch.Tensor,
    logit_scale: torch.Tensor,
    alpha: float = 0.5,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> NeuroCineLoss:
    """w_spa·L_spa + w_tem·L_tem + w_emb·L_emb + w_cond·MSE(conditioning tokens).

    Parameters
    ----------
    output : FMRIEncoderOutput
        Of the augmented window.
    target : tensor of shape (batch, window, n_tokens, patch_size)
        The patchified window before augmentation.
    token_mask : bool tensor of shape (batch, n_tokens)
    replaced : bool tensor of shape (batch, window)
    text_emb, image_emb : tensors of shape (batch, embed_dim)
        CLIP embeddings of the caption and of the clip's frames.
    cond_true : tensor of shape (batch, n_cond_tokens, cond_dim)
        The renderer's teacher conditioning tokens.
    logit_scale : scalar tensor
    alpha : float in [0, 1]
        Weight of text against image in L_emb.
    weights : 4 floats
        (w_spa, w_tem, w_emb, w_cond).

    Returns
    -------
    NeuroCineLoss
    """
    if len(weights) != 4:
        raise ValueError(f"weights: expected 4 numbers (w_spa, w_tem, w_emb, w_cond), got {len(weights)}.")
    check_shape(cond_true, "cond_true", tuple(output.conditioning.shape), f"{tuple(output.conditioning.shape)}")
    spa = spatial_loss(output.reconstruction, target, token_mask)
    tem = temporal_loss(output.reconstruction, target, replaced)
    emb = embedding_loss(output.embedding, text_emb, image_emb, logit_scale, alpha)
    cond = F.mse_loss(output.conditioning, cond_true)
    total = weights[0] * spa + weights[1] * tem + weights[2] * emb + weights[3] * cond
    return NeuroCineLoss(total, spa, tem, emb, cond)


# ----------------------------------------------------------------------------------------------------------------------
# attention on voxels


def attention_to_voxels(
    attention: torch.Tensor | Sequence[torch.Tensor], n_voxels: int, patch_size: int
) -> torch.Tensor:
    """Attention each voxel receives: its token's received attention, averaged over heads and queries.

    Parameters
    ----------
    attention : tensor of shape (batch, n_heads, n_tokens, n_tokens), or a list of them (one per layer, averaged)
        Rows are queries and sum to 1 (``FMRIEncoderOutput.attention``).
    n_voxels : int
        Length of the voxel vector the tokens were cut from.
    patch_size : int

    Returns
    -------
    tensor of shape (batch, n_voxels)
        Every voxel of token k gets mean over heads and queries q of ``attention[:, :, q, k]``; over all tokens the
        values sum to 1, so a uniform map is 1 / n_tokens. Padding voxels are dropped.

    Raises
    ------
    ValueError
        If the number of tokens does not match ``n_voxels`` and ``patch_size``, or the list is empty.
    """
    if not isinstance(attention, torch.Tensor):
        if len(attention) == 0:
            raise ValueError("attention: expected at least one layer's weights, got an empty list.")
        attention = torch.stack(list(attention)).mean(dim=0)
    n_tokens = n_patches(n_voxels, patch_size)
    layout = f"(batch, n_heads, {n_tokens}, {n_tokens}) for {n_voxels} voxels in patches of {patch_size}"
    check_shape(attention, "attention", (None, None, n_tokens, n_tokens), layout)
    received = attention.mean(dim=(1, 2))
    return received.repeat_interleave(patch_size, dim=1)[:, :n_voxels]
