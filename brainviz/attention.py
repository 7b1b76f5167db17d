"""Where the NeuroCine fMRI encoder attends: its self-attention over voxel-patch tokens, mapped back to voxels.

These are **attention maps, not attributions**: they show which tokens the encoder's queries read from, not how much
a voxel changes the output (that is :mod:`brainviz.attribution`). Two readings (shared/reference/surfaces_and_app.md
§6):

- ``raw``: each layer's softmax weights, averaged over heads, queries and layers (the token's *received* attention).
- ``rollout`` (Abnar & Zuidema 2020): with the residual stream counted as half of every layer,
  Ã_l = ½·mean_heads(A_l) + ½·I (rows renormalised), R = Ã_L ⋯ Ã_1; a token's score is its column mean of R, the
  attention that flows to it through all layers.

Every voxel of a token gets the token's score (a token is one patch of ``patch_size`` consecutive selected voxels
across the TR window); over all tokens the scores sum to 1, so a uniform map is 1 / n_tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipelines.models.neurocine import FMRIEncoder, attention_to_voxels

MODES = ("raw", "rollout")


def attention_rollout(attention: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout through the layers.

    Parameters
    ----------
    attention : sequence of tensors of shape (batch, n_heads, n_tokens, n_tokens)
        Per layer, first layer first; rows are queries and sum to 1.
    residual : float in [0, 1)
        Weight of the identity (the residual connection) in every layer.

    Returns
    -------
    tensor of shape (batch, n_tokens, n_tokens)
        Row-stochastic: row q says how much of query q's final representation comes from each input token.

    Raises
    ------
    ValueError
        If the sequence is empty, shapes differ between layers, or ``residual`` is outside [0, 1).
    """
    if len(attention) == 0:
        raise ValueError("attention: expected at least one layer's weights, got an empty sequence.")
    if not 0.0 <= residual < 1.0:
        raise ValueError(f"residual: expected a weight in [0, 1), got {residual!r}.")
    shape = attention[0].shape
    if len(shape) != 4 or shape[-1] != shape[-2] or any(a.shape != shape for a in attention):
        raise ValueError(
            "attention: expected every layer as (batch, n_heads, n_tokens, n_tokens) of one shape, got "
            f"{[tuple(a.shape) for a in attention]}."
        )
    eye = torch.eye(shape[-1], dtype=attention[0].dtype, device=attention[0].device)
    rollout = None
    for layer in attention:
        mixed = residual * eye + (1 - residual) * layer.mean(dim=1)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


@torch.no_grad()
def encoder_attention(model: FMRIEncoder, fmri: np.ndarray | torch.Tensor, mode: str = "rollout") -> np.ndarray:
    """Attention each selected voxel receives in the fMRI encoder.

    Parameters
    ----------
    model : FMRIEncoder
    fmri : array of shape (batch, window, n_voxels)
        z-scored TR windows, as the encoder takes them.
    mode : {"raw", "rollout"}

    Returns
    -------
    array of shape (batch, n_voxels), float32
        Summing to 1 over tokens (each token's value repeated over its voxels).

    Raises
    ------
    ValueError
        For an unknown mode or an input the encoder does not accept.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}.")
    model.eval()
    c = model.config
    weights = model(torch.as_tensor(np.asarray(fmri, dtype=np.float32)), return_attention=True).attention
    if mode == "rollout":
        weights = attention_rollout(weights)[:, None]  # one "head" with the rolled-out matrix
    return attention_to_voxels(weights, c.n_voxels, c.patch_size).numpy().astype(np.float32)
