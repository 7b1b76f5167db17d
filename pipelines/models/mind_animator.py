"""Mind-Animator's stage-1 decoders: semantic decoder, structure decoder and Consistency Motion Generator (CMG).

Reference: ``methods_and_protocols.md`` C.1 (values from the released code, formulas from the paper). The modules
keep the published layer recipes; widths are configuration, and the defaults are this project's demo scale (4500
voxels, CLIP embed_dim 128, 32 conditioning tokens of 128 dims = the demo CLIP text tower's output, image latents
8×16×16, 8 frames) instead of ViT-B/32 (512), SD text tokens (19×768) and SD latents (4×64×64).

Deviations, each explained where it is implemented:

- :func:`semantic_loss` follows the paper's formula (α-weighted symmetric InfoNCE against text and video) plus the
  token MSE, not the code's MSE + 0.01·CE mix. Optionally (``target_temperature`` > 0) its InfoNCE uses SoftCLIP
  targets, as NeuroClips does (reference C.3): clips of one scene share a caption, and hard InfoNCE would push
  their identical targets apart.
- :class:`SemanticDecoder` predicts all ``n_tokens`` conditioning tokens; the code predicts tokens 1..19 and
  prepends the prompt-independent token 0 from a stored ``cls.npy``.
- :class:`ConsistencyMotionGenerator` projects each flattened frame latent to ``d_model`` (the code attends in the
  16384-d latent space directly), uses pre-norm blocks and several fMRI memory tokens, and draws a fresh sparse causal
  mask at every training call (the code draws one mask when the Dataset is built and keeps it for all training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.checks import check_dropout, check_positive, check_shape
from pipelines.models.io import SavesPretrained

# ----------------------------------------------------------------------------------------------------------------------
# shared checks and losses


def symmetric_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, target_temperature: float = 0.0
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE between matched rows of ``a`` and ``b`` (cosine similarity × exp(logit_scale)).

    The mean of the row-wise and column-wise cross-entropy of ``exp(s) · â b̂ᵀ`` with the diagonal as targets; the
    scale is clamped at 100 as in CLIP.

    Parameters
    ----------
    a, b : tensors of shape (batch, embed_dim)
        Row i of ``a`` matches row i of ``b``; both are L2-normalised here.
    logit_scale : scalar tensor
        Log of the inverse temperature.
    target_temperature : float
        0: the diagonal is the only positive (CLIP). > 0: soft targets ``softmax(b̂ b̂ᵀ / target_temperature)`` per
        row (SoftCLIP, as NeuroClips trains its semantic decoder, reference C.3), so samples with identical or
        near-identical targets — clips of one scene share a caption — are not pushed apart.

    Returns
    -------
    scalar tensor
    """
    if target_temperature < 0:
        raise ValueError(f"target_temperature: expected a number >= 0, got {target_temperature!r}.")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"symmetric_info_nce: expected two tensors of the same shape (batch, embed_dim), got {tuple(a.shape)} "
            f"and {tuple(b.shape)}."
        )
    b_hat = F.normalize(b, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * F.normalize(a, dim=-1) @ b_hat.T
    if target_temperature > 0:
        targets = (b_hat @ b_hat.T / target_temperature).softmax(dim=-1).detach()  # symmetric: rows = columns
    else:
        targets = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def l1_weight_penalty(module: nn.Module) -> torch.Tensor:
    """Sum of absolute values of the module's weight matrices and kernels (biases and norm gains excluded).

    Mind-Animator adds this to the structure-decoder loss (×4e-6, decaying by exp(−5e-5·epoch)) and the CMG loss
    (×6e-7, decaying by exp(−0.001·epoch)); the weight and its schedule belong to the training loop.
    """
    terms = [p.abs().sum() for name, p in module.named_parameters() if name.endswith("weight") and p.ndim >= 2]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def _init_linear(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear layer, as the reference code does."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


# ----------------------------------------------------------------------------------------------------------------------
# semantic decoder


@dataclass(frozen=True)
class SemanticDecoderConfig:
    """Architecture of the semantic decoder (reference C.1; code values in comments)."""

    n_voxels: int = 4500  # input fMRI vector length (code: 4500)
    embed_dim: int = 128  # CLIP space = trunk width (code: 512, ViT-B/32)
    n_blocks: int = 3  # residual blocks of the trunk (code: 3)
    head_dims: tuple[int, ...] = (512, 1024)  # hidden widths of the token head (code: 2048, 4096)
    n_tokens: int = 32  # conditioning tokens predicted (code: 19 + stored token 0; demo CLIP context_length 32)
    token_dim: int = 128  # width of a conditioning token (code: 768; demo CLIP text width 128)
    dropout: float = 0.3  # after the input layer (code: 0.3)
    block_dropout: float = 0.15  # inside each residual block (code: 0.15)
    out_proj: bool = False  # a Linear(embed_dim → embed_dim) after the trunk, so f can take either sign (code: none)
    linear_readout: bool = False  # f = Linear(n_voxels → embed_dim)(fMRI) + trunk(fMRI); needs out_proj (code: none)


class SemanticOutput(NamedTuple):
    """What :class:`SemanticDecoder` returns."""

    embedding: torch.Tensor  # (batch, embed_dim): f, the fMRI embedding in CLIP space (not normalised)
    tokens: torch.Tensor  # (batch, n_tokens, token_dim): the renderer's conditioning tokens


class _ResidualMLP(nn.Module):
    """x + Dropout(GELU(LN(Linear(x))))."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class SemanticDecoder(SavesPretrained, nn.Module):
    """fMRI → CLIP-space embedding f and the renderer's text-conditioning tokens.

    Trunk: Linear(n_voxels → embed_dim), LN, GELU, Dropout, then ``n_blocks`` residual [Linear, LN, GELU, Dropout]
    blocks; its output is f. Head: [LN, GELU, Linear] through ``head_dims`` to ``n_tokens × token_dim``. A learnable
    logit scale (initialised to log(1/0.07)) serves the contrastive loss.

    Deviations (reference C.1): all ``n_tokens`` tokens are predicted, including the prompt-independent token 0 that
    the code loads from ``cls.npy``; the token MSE learns it as a constant, and no extra file is needed. With
    ``out_proj`` a Linear(embed_dim → embed_dim) ends the trunk: the reference's f is a sum of GELU outputs, each at
    least about −0.17, so it cannot point where a CLIP embedding with large negative components points.
    """

    CONFIG = SemanticDecoderConfig

    def __init__(self, config: SemanticDecoderConfig):
        super().__init__()
        check_positive(config, "n_voxels", "embed_dim", "n_tokens", "token_dim")
        if config.n_blocks < 0 or any(d < 1 for d in config.head_dims):
            raise ValueError(
                f"SemanticDecoderConfig: expected n_blocks >= 0 and positive head_dims, got n_blocks="
                f"{config.n_blocks}, head_dims={config.head_dims}."
            )
        check_dropout(config, "dropout", "block_dropout")
        if config.linear_readout and not config.out_proj:
            raise ValueError(
                "SemanticDecoderConfig: expected out_proj=True with linear_readout=True (the trunk's last layer starts "
                "at zero, so that f starts as the read-out), got out_proj=False."
            )
        self.config = config
        d = config.embed_dim
        self.trunk = nn.Sequential(
            nn.Linear(config.n_voxels, d),
            nn.LayerNorm(d),
            nn.GELU(),
            nn.Dropout(config.dropout),
            *[_ResidualMLP(d, config.block_dropout) for _ in range(config.n_blocks)],
            *([nn.Linear(d, d)] if config.out_proj else []),
        )
        head, width = [], d
        for out in (*config.head_dims, config.n_tokens * config.token_dim):
            head += [nn.LayerNorm(width), nn.GELU(), nn.Linear(width, out)]
            width = out
        self.head = nn.Sequential(*head)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if config.linear_readout:
            self.readout = nn.Linear(config.n_voxels, d)
        _init_linear(self)
        if config.linear_readout:  # the non-linear trunk starts silent: f is the read-out until training moves it
            nn.init.zeros_(self.trunk[-1].weight)

    def set_readout(self, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray) -> None:
        """Set the linear read-out (``linear_readout``), e.g. to a ridge solution fitted on training clips.

        Parameters
        ----------
        weight : array of shape (embed_dim, n_voxels), or a pair of factors whose product it is (:func:`set_low_rank`)
        bias : array of shape (embed_dim,)

        Raises
        ------
        ValueError
            If the decoder has no read-out or a shape differs.
        """
        if not self.config.linear_readout:
            raise ValueError("set_readout: expected a decoder built with linear_readout=True, got one without.")
        if isinstance(weight, (tuple, list)):
            weight = _product(weight)
        for name, value, target in (("weight", weight, self.readout.weight), ("bias", bias, self.readout.bias)):
            value = torch.as_tensor(np.asarray(value), dtype=target.dtype)
            if value.shape != target.shape:
                raise ValueError(f"{name}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}.")
            with torch.no_grad():
                target.copy_(value)

    def forward(self, fmri: torch.Tensor) -> SemanticOutput:
        """Decode a batch.

        Parameters
        ----------
        fmri : tensor of shape (batch, n_voxels)

        Returns
        -------
        SemanticOutput
            ``embedding`` (batch, embed_dim) and ``tokens`` (batch, n_tokens, token_dim).
        """
        check_shape(fmri, "fmri", (None, self.config.n_voxels), f"(batch, {self.config.n_voxels})")
        f = self.trunk(fmri)
        if self.config.linear_readout:
            f = f + self.readout(fmri)
        tokens = self.head(f).view(len(fmri), self.config.n_tokens, self.config.token_dim)
        return SemanticOutput(f, tokens)


class SemanticLoss(NamedTuple):
    """The semantic decoder's loss and its parts (each a scalar tensor)."""

    total: torch.Tensor
    text: torch.Tensor  # symmetric InfoNCE of f against the caption embeddings
    video: torch.Tensor  # symmetric InfoNCE of f against the video embeddings
    tokens: torch.Tensor  # MSE of the conditioning tokens


def semantic_loss(
    f: torch.Tensor,
    text_emb: torch.Tensor,
    video_emb: torch.Tensor,
    tokens_pred: torch.Tensor,
    tokens_true: torch.Tensor,
    logit_scale: torch.Tensor,
    alpha: float = 0.5,
    token_weight: float = 1.0,
    target_temperature: float = 0.0,
) -> SemanticLoss:
    """α·InfoNCE_sym(f, text) + (1 − α)·InfoNCE_sym(f, video) + token_weight·MSE(tokens).

    This follows the paper's formula L = α·BiInfoNCE(f, t) + (1 − α)·BiInfoNCE(f, v) (reference C.1, α = 0.5 in the
    code) and adds the token regression the renderer needs. The released code instead trains with
    MSE(f, text) + 0.01·½[CE_sym(f, text) + CE_sym(f, image)] + 0.5·MSE(tokens): the MSE term pulls f towards the
    unnormalised text embedding and leaves the contrastive part almost unweighted.

    Parameters
    ----------
    f : tensor of shape (batch, embed_dim)
        The decoder's embedding.
    text_emb, video_emb : tensors of shape (batch, embed_dim)
        CLIP embeddings of the clip's caption and of its frames (one frame, as in the code, or their mean).
    tokens_pred, tokens_true : tensors of shape (batch, n_tokens, token_dim)
        Predicted and teacher conditioning tokens.
    logit_scale : scalar tensor
        The decoder's learnable log inverse temperature.
    alpha : float in [0, 1]
        Weight of the text term.
    token_weight : float
        Weight of the token MSE (the code uses 0.5).
    target_temperature : float
        Soft contrastive targets (see :func:`symmetric_info_nce`); 0 = the paper's hard InfoNCE.

    Returns
    -------
    SemanticLoss

    Raises
    ------
    ValueError
        If ``alpha`` is outside [0, 1] or shapes disagree.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha!r}.")
    for name, x in (("text_emb", text_emb), ("video_emb", video_emb)):
        check_shape(x, name, tuple(f.shape), f"{tuple(f.shape)} like f")
    check_shape(tokens_true, "tokens_true", tuple(tokens_pred.shape), f"{tuple(tokens_pred.shape)} like tokens_pred")
    text = symmetric_info_nce(f, text_emb, logit_scale, target_temperature)
    video = symmetric_info_nce(f, video_emb, logit_scale, target_temperature)
    tokens = F.mse_loss(tokens_pred, tokens_true)
    return SemanticLoss(alpha * text + (1 - alpha) * video + token_weight * tokens, text, video, tokens)


# ----------------------------------------------------------------------------------------------------------------------
# structure decoder


@dataclass(frozen=True)
class StructureDecoderConfig:
    """Architecture of the structure decoder (reference C.1; code values in comments)."""

    n_voxels: int = 4500  # input fMRI vector length (code: 4500)
    hidden_dim: int = 512  # trunk width (code: 1024)
    n_blocks: int = 2  # residual [Linear, Dropout] blocks, no nonlinearity (code: 2)
    latent_shape: tuple[int, int, int] = (8, 16, 16)  # first-frame latent (channels, h, w) (code: 4, 64, 64)
    dropout: float = 0.2  # after the input layer and in each block (code: 0.2)
    linear_readout: bool = False  # + Linear(hidden → latent) from the input layer's output (code: none)


def set_low_rank(first: nn.Linear, out: nn.Linear, weight, bias) -> None:
    """Make ``out(first(x))`` the best approximation of ``x @ weight.T + bias`` of rank ``first.out_features``.

    The SVD U S Vᵀ of ``weight`` (out.out_features, first.in_features), cut to that rank, is shared evenly: ``first``
    gets S^½ Vᵀ (and a zero bias, if it has one), ``out`` gets U S^½ and ``bias``; components beyond the map's own
    rank are zero. ``weight`` may also be given as a pair of factors (left (n_out, k), right (k, n_in)) whose product
    is the map, e.g. :meth:`pipelines.training.decoders.ridge.RidgeBaseline.factors`: the SVD then costs
    O((n_out + n_in)·k²) instead of O(n_out·n_in·min(n_out, n_in)), the same result for a map of rank k.

    Raises
    ------
    ValueError
        If ``weight`` (or its factors) or ``bias`` does not match the two layers.
    """
    n_out, n_in, rank = out.out_features, first.in_features, first.out_features
    u, s, vt = _svd(weight, n_out, n_in)
    bias = np.asarray(bias, np.float64)
    if bias.shape != (n_out,):
        raise ValueError(f"set_readout: expected bias of shape {(n_out,)}, got {bias.shape}.")
    k = min(rank, len(s))
    root = np.sqrt(s[:k])
    w_first, w_out = np.zeros((rank, n_in)), np.zeros((n_out, rank))
    w_first[:k], w_out[:, :k] = root[:, None] * vt[:k], u[:, :k] * root
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(w_first))
        if first.bias is not None:
            first.bias.zero_()
        out.weight.copy_(torch.from_numpy(w_out))
        out.bias.copy_(torch.from_numpy(bias))


def _factors(pair, n_out: int | str = "n_out", n_in: int | str = "n_in") -> tuple[np.ndarray, np.ndarray]:
    """A pair of factors (left (n_out, k), right (k, n_in)) as float64 arrays, checked (a size given as a name is
    free)."""
    if len(pair) != 2:
        raise ValueError(f"set_readout: expected a pair of factors (left, right), got {len(pair)} arrays.")
    left, right = (np.asarray(a, np.float64) for a in pair)
    fits = left.ndim == 2 and right.ndim == 2 and left.shape[1] == right.shape[0]
    if fits and isinstance(n_out, int):
        fits = left.shape[0] == n_out
    if fits and isinstance(n_in, int):
        fits = right.shape[1] == n_in
    if not fits:
        raise ValueError(
            f"set_readout: expected factors of shapes ({n_out}, k) and (k, {n_in}), got {left.shape} and {right.shape}."
        )
    return left, right


def _product(pair) -> np.ndarray:
    """The map (left @ right) of a pair of factors."""
    left, right = _factors(pair)
    return left @ right


def _svd(weight, n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD (U, S, Vᵀ) of a map (n_out, n_in) given whole or as factors (left (n_out, k), right (k, n_in))."""
    if isinstance(weight, (tuple, list)):
        left, right = _factors(weight, n_out, n_in)
        q, r = np.linalg.qr(right.T)  # right = rᵀ qᵀ, q orthonormal columns
        u, s, wt = np.linalg.svd(left @ r.T, full_matrices=False)
        return u, s, wt @ q.T
    weight = np.asarray(weight, np.float64)
    if weight.shape != (n_out, n_in):
        raise ValueError(f"set_readout: expected weight of shape {(n_out, n_in)}, got {weight.shape}.")
    return np.linalg.svd(weight, full_matrices=False)


class _ResidualLinear(nn.Module):
    """x + Dropout(Linear(x)), no nonlinearity (as in the reference)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class StructureDecoder(SavesPretrained, nn.Module):
    """fMRI → the (scaled) image-VAE latent of the clip's first frame.

    Linear(n_voxels → hidden) + Dropout, ``n_blocks`` residual [Linear, Dropout] blocks, LN, ReLU,
    Linear(hidden → channels·h·w). Train with :func:`structure_loss` plus, optionally, a decaying
    :func:`l1_weight_penalty`. The reference (C.1) targets the SD KL-VAE latent at 512 px (4×64×64); the demo tier's
    VAE gives 8×16×16.

    Deviation (not in the reference): with ``linear_readout`` a Linear(hidden → channels·h·w) reads the input
    layer's output straight out, beside the LN-ReLU branch, whose residual blocks and last layer start at zero. The
    reference's only path to the latent runs through a ReLU, which drops the negative half of every hidden unit; a
    rank-``hidden_dim`` linear map (:meth:`set_readout`, e.g. the ridge baseline's) is then exactly representable
    and the branch learns what it misses.
    """

    CONFIG = StructureDecoderConfig

    def __init__(self, config: StructureDecoderConfig):
        super().__init__()
        check_positive(config, "n_voxels", "hidden_dim")
        if config.n_blocks < 0 or len(config.latent_shape) != 3 or min(config.latent_shape) < 1:
            raise ValueError(
                f"StructureDecoderConfig: expected n_blocks >= 0 and latent_shape of 3 positive sizes, got "
                f"n_blocks={config.n_blocks}, latent_shape={config.latent_shape}."
            )
        check_dropout(config, "dropout")
        self.config = config
        h = config.hidden_dim
        self.net = nn.Sequential(
            nn.Linear(config.n_voxels, h),
            nn.Dropout(config.dropout),
            *[_ResidualLinear(h, config.dropout) for _ in range(config.n_blocks)],
            nn.LayerNorm(h),
            nn.ReLU(),
            nn.Linear(h, math.prod(config.latent_shape)),
        )
        if config.linear_readout:
            self.readout = nn.Linear(h, math.prod(config.latent_shape))
        _init_linear(self)
        if config.linear_readout:  # the branch starts silent: the decoder is the read-out until training moves it
            for block in self.net[2 : 2 + config.n_blocks]:
                nn.init.zeros_(block.layers[0].weight)
            nn.init.zeros_(self.net[-1].weight)

    def set_readout(self, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray) -> None:
        """Make the linear path (``linear_readout``) the best rank-``hidden_dim`` approximation of a linear map.

        The map's SVD U S Vᵀ, cut to ``hidden_dim`` components, is split evenly between the input layer
        (S^½ Vᵀ, no bias) and the read-out (U S^½, bias ``bias``), so that before training the decoder predicts
        ``fmri @ weight.T + bias`` up to that rank (e.g. the ridge baseline, fitted on training clips).

        Parameters
        ----------
        weight : array of shape (channels·h·w, n_voxels), or a pair of factors whose product it is (:func:`set_low_rank`)
        bias : array of shape (channels·h·w,)

        Raises
        ------
        ValueError
            If the decoder has no read-out or a shape differs.
        """
        c = self.config
        if not c.linear_readout:
            raise ValueError("set_readout: expected a decoder built with linear_readout=True, got one without.")
        set_low_rank(self.net[0], self.readout, weight, bias)

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        """Decode a batch: tensor of shape (batch, n_voxels) → latents of shape (batch, channels, h, w)."""
        check_shape(fmri, "fmri", (None, self.config.n_voxels), f"(batch, {self.config.n_voxels})")
        hidden = self.net[0](fmri)
        out = self.net[1:](hidden)
        if self.config.linear_readout:
            out = out + self.readout(hidden)
        return out.view(len(fmri), *self.config.latent_shape)


def structure_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and teacher first-frame latents, both of shape (batch, channels, h, w)."""
    check_shape(target, "target", tuple(pred.shape), f"{tuple(pred.shape)} like pred")
    return F.mse_loss(pred, target)


# ----------------------------------------------------------------------------------------------------------------------
# Consistency Motion Generator


def sparse_causal_mask(
    n_frames: int, keep_prob: float, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Mind-Animator's sparse causal attention mask: which key frames each query frame may attend to.

    The rule of the reference's ``subsequent_mask(size, mask_ratio)`` (C.1), with ``keep_prob`` = its
    ``mask_ratio``: start from the causal mask (query i sees keys j ≤ i); then for every query row i ≥ 2, every key
    j ≥ 1 — including the diagonal j = i, so a frame may not see itself — is hidden with probability
    1 − keep_prob, independently. Rows 0 and 1 stay fully causal and frame 0 is always visible, so no row is ever
    empty. ``keep_prob = 0`` (the reference's inference setting) lets rows ≥ 2 see frame 0 only; ``keep_prob = 1``
    is the plain causal mask.

    Deviation: the reference draws the mask once, when the training Dataset is built; callers here draw a new one
    at every call (every training step).

    Parameters
    ----------
    n_frames : int
        Sequence length (queries = keys).
    keep_prob : float in [0, 1]
        Probability that an allowed key j ≥ 1 of a row i ≥ 2 stays visible (training: 0.6).
    generator : torch.Generator, optional
        Source of randomness (CPU).
    device : str or torch.device
        Where the returned mask lives.

    Returns
    -------
    bool tensor of shape (n_frames, n_frames)
        ``mask[i, j]`` is True when query i may attend to key j.

    Raises
    ------
    ValueError
        If ``n_frames`` < 1 or ``keep_prob`` is outside [0, 1].
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames: expected a positive integer, got {n_frames!r}.")
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep_prob: expected a probability in [0, 1], got {keep_prob!r}.")
    visible = torch.ones(n_frames, n_frames, dtype=torch.bool).tril()
    if n_frames > 2 and keep_prob < 1.0:
        dropped = torch.rand(n_frames, n_frames, generator=generator) >= keep_prob
        dropped[:2] = False  # rows 0 and 1 are never thinned
        dropped[:, 0] = False  # frame 0 is always visible
        visible &= ~dropped
    return visible.to(device)


@dataclass(frozen=True)
class MotionGeneratorConfig:
    """Architecture of the Consistency Motion Generator (reference C.1; code values in comments)."""

    n_voxels: int = 4500  # input fMRI vector length (code: 4500)
    latent_shape: tuple[int, int, int] = (8, 16, 16)  # a frame latent (channels, h, w) = one token (code: 4, 64, 64)
    n_frames: int = 8  # frames per clip, including the first (code: 8)
    d_model: int = 256  # token width after projecting the flattened latent (code: attends at 16384, Q/K/V 1024)
    n_heads: int = 4  # attention heads (code: 4)
    n_layers: int = 2  # decoder layers (code: 2)
    ffn_dim: int = 512  # feed-forward hidden width (code: 768)
    fmri_hidden: int = 256  # width of the fMRI encoder MLP (code: 768)
    n_memory_tokens: int = 4  # fMRI memory tokens for cross-attention (code: 1)
    dropout: float = 0.2  # residual / embedding dropout (code: 0.2)
    attn_dropout: float = 0.15  # attention-weight dropout (code: 0.15)
    fmri_dropout: float = 0.3  # dropout in the fMRI encoder (code: 0.3)
    train_keep_prob: float = 0.6  # sparse causal mask in training: key kept with this probability (code: 0.6)
    inference_keep_prob: float = 0.0  # mask in eval mode; the reference uses 0 (rows >= 2 see frame 0 only); 1 = causal
    predict_delta: bool = False  # True: predict the change from the input frame (not in the reference)
    warp_grid: int = 0  # > 0: predict the input frame warped by a decoded warp_grid² flow plus a change (not in it)


class _DecoderLayer(nn.Module):
    """Pre-norm masked self-attention → cross-attention to fMRI memory → FFN, each with a residual."""

    def __init__(self, c: MotionGeneratorConfig):
        super().__init__()
        d = c.d_model
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, c.n_heads, dropout=c.attn_dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, c.n_heads, dropout=c.attn_dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, c.ffn_dim), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(c.ffn_dim, d))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, h, attn_mask=blocked, need_weights=False)[0])
        h = self.norm2(x)
        x = x + self.drop(self.cross_attn(h, memory, memory, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm3(x)))


def _sinusoid(n_positions: int, dim: int) -> torch.Tensor:
    """The transformer's sinusoidal position table: tensor of shape (n_positions, dim)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


class ConsistencyMotionGenerator(SavesPretrained, nn.Module):
    """Transformer decoder over frame-latent tokens, conditioned on fMRI: predicts each next frame's latent.

    Each frame latent (channels, h, w) is flattened and projected to ``d_model`` (one token per frame, as in the
    reference's "patch size 64"), gets a sinusoidal temporal position, and passes ``n_layers`` blocks of sparse-
    causal self-attention (:func:`sparse_causal_mask`), cross-attention to ``n_memory_tokens`` fMRI tokens (an MLP:
    Linear, LN, GELU, Dropout, one residual block, Linear) and an FFN; a final LayerNorm and a Linear map back to
    the latent. Training is teacher-forced: ``forward(latents[:, :-1], fmri)`` predicts ``latents[:, 1:]``
    (:func:`consistency_loss`); :meth:`generate` decodes autoregressively from a first frame.

    Deviations (reference C.1): the projection to ``d_model`` replaces attention in the 16384-d latent space (the
    reference's Q/K/V project 16384 → 1024 anyway; here the input and output projections are shared by all layers),
    blocks are pre-norm instead of the code's post-residual LayerNorm, the fMRI gives several memory tokens instead
    of one, and a new mask is drawn at every training call instead of once per run.

    Optional deviation ``warp_grid = g > 0`` (off in the reference): each output is the input frame's latent warped
    by a decoded flow plus the decoded change (``predict_delta`` is then implied). The flow is one g × g field of
    vectors in latent pixels per frame for the whole clip, read from the fMRI memory tokens by a zero-initialised
    Linear (so training starts from the identity warp) and upsampled bilinearly (:func:`warp_latent`). One token per frame and a linear
    read-out can add an object where the fMRI says it is, but cannot move a texture by a velocity the fMRI encodes:
    that needs the product of the velocity and the latent's spatial gradient. Measured on the simulated subject
    (README, "Stage-1 decoders"): warping each test clip's first latent by its teacher flow's median vector lowers
    the latent MSE of frames 1–7 from 0.690 (first frame repeated) to 0.429, and the warp CMG's validation MSE is
    0.58 against 0.66 for the reference design. Trained through the warp alone, the flow follows the true global
    flow only weakly (correlation 0.38 / 0.20 for x / y); the motion stage's ``flow_weight`` supervises it with the
    RAFT flow (:class:`pipelines.training.decoders.stages.MotionStage`).
    """

    CONFIG = MotionGeneratorConfig

    def __init__(self, config: MotionGeneratorConfig):
        super().__init__()
        check_positive(config, "n_voxels", "n_frames", "d_model", "n_heads", "n_layers", "ffn_dim", "fmri_hidden")
        check_positive(config, "n_memory_tokens")
        if isinstance(config.warp_grid, bool) or not isinstance(config.warp_grid, int) or config.warp_grid < 0:
            raise ValueError(
                f"MotionGeneratorConfig.warp_grid: expected an integer >= 0 (0 = no warp), got {config.warp_grid!r}."
            )
        if len(config.latent_shape) != 3 or min(config.latent_shape) < 1:
            raise ValueError(
                f"MotionGeneratorConfig.latent_shape: expected 3 positive sizes (channels, h, w), got "
                f"{config.latent_shape}."
            )
        if config.n_frames < 2:
            raise ValueError(f"MotionGeneratorConfig.n_frames: expected at least 2 frames, got {config.n_frames}.")
        if config.d_model % config.n_heads or config.d_model % 2:
            raise ValueError(
                f"MotionGeneratorConfig.d_model: expected an even multiple of n_heads={config.n_heads}, got "
                f"{config.d_model}."
            )
        check_dropout(config, "dropout", "attn_dropout", "fmri_dropout")
        for name in ("train_keep_prob", "inference_keep_prob"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ValueError(
                    f"MotionGeneratorConfig.{name}: expected a probability in [0, 1], got {getattr(config, name)!r}."
                )
        self.config = config
        d, latent_dim = config.d_model, math.prod(config.latent_shape)
        self.fmri_encoder = nn.Sequential(
            nn.Linear(config.n_voxels, config.fmri_hidden),
            nn.LayerNorm(config.fmri_hidden),
            nn.GELU(),
            nn.Dropout(config.fmri_dropout),
            _ResidualMLP(config.fmri_hidden, config.fmri_dropout),
            nn.Linear(config.fmri_hidden, config.n_memory_tokens * d),
        )
        self.embed = nn.Linear(latent_dim, d)
        self.register_buffer("positions", _sinusoid(config.n_frames, d), persistent=False)
        self.embed_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(_DecoderLayer(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, latent_dim)
        _init_linear(self)
        self.flow = None
        if config.warp_grid:  # starts as the identity warp
            self.flow = nn.Linear(config.n_voxels, 2 * config.warp_grid**2)
            nn.init.zeros_(self.flow.weight)
            nn.init.zeros_(self.flow.bias)

    def memory(self, fmri: torch.Tensor) -> torch.Tensor:
        """fMRI of shape (batch, n_voxels) → memory tokens of shape (batch, n_memory_tokens, d_model)."""
        return self.fmri_encoder(fmri).view(len(fmri), self.config.n_memory_tokens, self.config.d_model)

    def clip_flow(self, fmri: torch.Tensor) -> torch.Tensor:
        """fMRI (batch, n_voxels) → the clip's warp flow (batch, 2, g, g) in latent pixels per frame.

        Raises
        ------
        ValueError
            If the model has no warp (``warp_grid`` = 0).
        """
        if self.flow is None:
            raise ValueError("clip_flow: expected a model with warp_grid > 0, got warp_grid = 0.")
        g = self.config.warp_grid
        return self.flow(fmri).view(len(fmri), 2, g, g)

    def forward(
        self,
        latents: torch.Tensor,
        fmri: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Predict the next frame's latent at every position (teacher forcing).

        Parameters
        ----------
        latents : tensor of shape (batch, n_in, channels, h, w), 1 <= n_in <= n_frames
            Input frames (in training: frames 0 .. n_frames − 2).
        fmri : tensor of shape (batch, n_voxels)
        mask : bool tensor of shape (n_in, n_in), optional
            True where query i may attend to key j. Default: a fresh :func:`sparse_causal_mask` with
            ``train_keep_prob`` in training mode, with ``inference_keep_prob`` in eval mode.
        generator : torch.Generator, optional
            Draws the default training mask.

        Returns
        -------
        tensor of shape (batch, n_in, channels, h, w)
            Output i predicts frame i + 1.

        Raises
        ------
        ValueError
            If a shape does not match the config.
        """
        c = self.config
        layout = f"(batch, n_in <= {c.n_frames}, {', '.join(map(str, c.latent_shape))})"
        check_shape(latents, "latents", (None, None, *c.latent_shape), layout)
        n_in = latents.shape[1]
        if not 1 <= n_in <= c.n_frames:
            raise ValueError(f"latents: expected 1 to {c.n_frames} input frames, got {n_in}.")
        check_shape(fmri, "fmri", (len(latents), c.n_voxels), f"({len(latents)}, {c.n_voxels})")
        if mask is None:
            keep = c.train_keep_prob if self.training else c.inference_keep_prob
            mask = sparse_causal_mask(n_in, keep, generator, device=latents.device)
        check_shape(mask, "mask", (n_in, n_in), f"({n_in}, {n_in})")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a bool tensor (True = visible), got dtype {mask.dtype}.")
        flat = latents.flatten(2)
        x = self.embed_drop(self.embed(flat) + self.positions[:n_in])
        memory = self.memory(fmri)
        blocked = ~mask.to(latents.device)  # nn.MultiheadAttention: True = not allowed
        for layer in self.layers:
            x = layer(x, memory, blocked)
        out = self.out(self.norm(x)).view_as(latents)
        if self.flow is not None:  # one flow per clip, from the fMRI alone, applied at every position
            flow = self.clip_flow(fmri).repeat_interleave(n_in, dim=0)
            return out + warp_latent(latents.flatten(0, 1), flow).view_as(latents)
        if c.predict_delta:
            out = out + latents
        return out

    def generate(
        self,
        first_latent: torch.Tensor,
        fmri: torch.Tensor,
        n_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Greedy autoregressive decoding from the first frame (eval mode, ``inference_keep_prob`` mask).

        At each step the whole sequence so far is decoded with a fresh mask of its length and the last output is
        appended, as the reference does. Gradients flow (attribution needs them); wrap inference in
        ``torch.no_grad()``.

        Parameters
        ----------
        first_latent : tensor of shape (batch, channels, h, w)
            E.g. the structure decoder's output.
        fmri : tensor of shape (batch, n_voxels)
        n_frames : int, optional
            Frames to return including the first (default and maximum: config.n_frames).
        generator : torch.Generator, optional
            Draws the masks when 0 < inference_keep_prob < 1.

        Returns
        -------
        tensor of shape (batch, n_frames, channels, h, w)
            Frame 0 is ``first_latent``.

        Raises
        ------
        ValueError
            If ``n_frames`` is outside [1, config.n_frames] or a shape does not match.
        """
        c = self.config
        n_frames = c.n_frames if n_frames is None else n_frames
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or not 1 <= n_frames <= c.n_frames:
            raise ValueError(f"n_frames: expected an integer in [1, {c.n_frames}], got {n_frames!r}.")
        layout = f"(batch, {', '.join(map(str, c.latent_shape))})"
        check_shape(first_latent, "first_latent", (None, *c.latent_shape), layout)
        was_training = self.training
        self.eval()
        try:
            frames = first_latent[:, None]
            for _ in range(n_frames - 1):
                mask = sparse_causal_mask(frames.shape[1], c.inference_keep_prob, generator, device=frames.device)
                nxt = self(frames, fmri, mask=mask)[:, -1:]
                frames = torch.cat([frames, nxt], dim=1)
        finally:
            self.train(was_training)
        return frames


def warp_latent(latent: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Move a latent's content along a coarse flow: ``out(p) = latent(p − flow(p))``, bilinear, border-padded.

    Parameters
    ----------
    latent : tensor of shape (batch, channels, h, w)
    flow : tensor of shape (batch, 2, g, g)
        (x rightwards, y downwards) displacement in latent pixels, on a g × g grid spanning the latent's pixel
        centres (corners aligned); upsampled bilinearly to h × w. g = 1 is one vector for the whole latent.

    Raises
    ------
    ValueError
        If the shapes do not match.
    """
    if latent.ndim != 4:
        raise ValueError(f"latent: expected (batch, channels, h, w), got shape {tuple(latent.shape)}.")
    b, _, h, w = latent.shape
    if flow.ndim != 4 or flow.shape[0] != b or flow.shape[1] != 2 or flow.shape[2] != flow.shape[3]:
        raise ValueError(f"flow: expected ({b}, 2, g, g), got shape {tuple(flow.shape)}.")
    if flow.shape[2] == 1:
        flow = flow.expand(b, 2, h, w)
    else:
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
    ys = torch.arange(h, dtype=latent.dtype, device=latent.device)
    xs = torch.arange(w, dtype=latent.dtype, device=latent.device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    gx = (xx - flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0  # grid_sample's [-1, 1] pixel-centre coordinates
    gy = (yy - flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(latent, torch.stack([gx, gy], dim=-1), padding_mode="border", align_corners=True)


def consistency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Teacher-forced next-frame MSE, tensors of shape (batch, n_frames − 1, channels, h, w).

    The paper writes the squared error summed over frames and latent entries and averaged over the batch; the code
    (and this function) takes the mean over every entry, which differs only by a constant factor.
    """
    check_shape(target, "target", tuple(pred.shape), f"{tuple(pred.shape)} like pred")
    return F.mse_loss(pred, target)
