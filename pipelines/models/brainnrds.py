"""BrainNRDS's flow decoder: fMRI of a TR window + the first frame → optical flow, classified over a flow codebook.

Reference: ``methods_and_protocols.md`` C.4 (paper and project page only; no code was released). Published design:
RAFT flow of the ground truth; a k-means codebook of 40 flow vectors; input = fMRI of 5 TRs (an MLP, spatially
broadcast) + DINOv2 features of the initial frame; 3 residual 1×1-conv blocks; per-patch classification over the 40
clusters with cross-entropy; at inference the expectation over classes; flow at 3 frames per TR on a 32×32 grid.

Deviations, where the paper leaves freedom or the demo scale asks for it:

- The first-frame features come from a small convolutional stem trained with the decoder (the paper uses frozen
  DINOv2 features; the demo tier has no DINOv2). A caller with other features can replace ``stem``.
- A learned position map (``position_channels``, 0 disables it) is concatenated with the broadcast fMRI vector and
  the image features: with 1×1 convolutions only, a broadcast vector cannot say *where* motion is unless the image
  features happen to tell locations apart, while fMRI of early visual cortex is retinotopic.
- The codebook is fitted with scikit-learn's ``KMeans`` on a seeded random subsample of the training flow vectors.
- The linear flow (``readout_rank`` > 0, off by default): a rank-limited Linear of the window to the whole flow grid,
  whose flows join the trunk's input channels. The broadcast fMRI vector is one vector for every patch, so the
  trunk has to rebuild *where* each flow is from it and the position map, while the simulated motion voxels code
  local motion energy linearly (a ridge map from the window to the flows beats the decoder without it on the
  test split). :meth:`FlowDecoder.set_readout` starts it at such a map; the classification over the codebook
  and the expected flow stay as published.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.checks import check_positive, check_shape
from pipelines.models.io import SavesPretrained
from pipelines.models.mind_animator import set_low_rank


class FlowCodebook(nn.Module):
    """k flow vectors (cluster centres, in the units of the flows they were fitted on) stored as a buffer.

    Part of :class:`FlowDecoder`'s state, so it is saved and loaded with the decoder. Fit it with :meth:`fit` on
    training flows only.

    Parameters
    ----------
    n_clusters : int
        k (40 in BrainNRDS).
    """

    def __init__(self, n_clusters: int = 40):
        super().__init__()
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"n_clusters: expected a positive integer, got {n_clusters!r}.")
        self.n_clusters = n_clusters
        self.register_buffer("centres", torch.zeros(n_clusters, 2))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether centres have been fitted or set."""
        return bool(self.fitted)

    def set_centres(self, centres: torch.Tensor | np.ndarray) -> FlowCodebook:
        """Use the given centres: array of shape (n_clusters, 2) as (dx, dy). Returns ``self``."""
        centres = torch.as_tensor(centres, dtype=torch.float32).detach().cpu()
        if centres.shape != (self.n_clusters, 2):
            raise ValueError(f"centres: expected shape ({self.n_clusters}, 2), got {tuple(centres.shape)}.")
        self.centres.copy_(centres)
        self.fitted.fill_(True)
        return self

    def fit(self, vectors: np.ndarray | torch.Tensor, seed: int = 0, max_vectors: int = 200_000) -> FlowCodebook:
        """k-means on flow vectors (scikit-learn ``KMeans``, seeded); returns ``self``.

        Parameters
        ----------
        vectors : array of shape (n_vectors, 2)
            Training flow vectors (dx, dy), e.g. ``flows.permute(0, 1, 3, 4, 2).reshape(-1, 2)`` of flows of shape
            (batch, n_flows, 2, height, width).
        seed : int
            Seeds the subsample and k-means.
        max_vectors : int
            At most this many vectors, drawn without replacement, are clustered.

        Raises
        ------
        ValueError
            If ``vectors`` is not (n, 2), has non-finite values, or has fewer than n_clusters distinct rows.
        """
        from sklearn.cluster import KMeans

        vectors = np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors, np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != 2:
            raise ValueError(f"vectors: expected an array of shape (n_vectors, 2), got shape {vectors.shape}.")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors: expected finite flow values, got NaN or inf.")
        rng = np.random.default_rng(seed)
        if len(vectors) > max_vectors:
            vectors = vectors[rng.choice(len(vectors), max_vectors, replace=False)]
        n_distinct = len(np.unique(vectors, axis=0))
        if n_distinct < self.n_clusters:
            raise ValueError(
                f"vectors: expected at least n_clusters={self.n_clusters} distinct flow vectors, got {n_distinct}; "
                "pass more training flows or lower n_clusters."
            )
        kmeans = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=seed).fit(vectors)
        centres = kmeans.cluster_centers_
        order = np.lexsort((centres[:, 1], centres[:, 0]))  # a stable order, independent of k-means' labelling
        return self.set_centres(centres[order])

    def assign(self, flows: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centre (Euclidean) for every flow vector: the cross-entropy targets.

        Parameters
        ----------
        flows : tensor of shape (..., 2, height, width)
            E.g. (batch, n_flows, 2, height, width).

        Returns
        -------
        long tensor of shape (..., height, width)

        Raises
        ------
        ValueError
            If the codebook is not fitted or ``flows`` has no axis of size 2 at position −3.
        """
        self._check_fitted()
        if not isinstance(flows, torch.Tensor) or flows.ndim < 3 or flows.shape[-3] != 2:
            got = tuple(flows.shape) if isinstance(flows, torch.Tensor) else type(flows).__name__
            raise ValueError(f"flows: expected a tensor of shape (..., 2, height, width), got {got}.")
        vectors = flows.movedim(-3, -1).to(self.centres.dtype)
        distance = (vectors[..., None, :] - self.centres).square().sum(-1)
        return distance.argmin(-1)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("FlowCodebook: expected fitted centres, got an unfitted codebook; call fit() first.")


def expected_flow(logits: torch.Tensor, codebook: FlowCodebook | torch.Tensor) -> torch.Tensor:
    """Probability-weighted sum of the cluster centres: the decoded flow.

    Parameters
    ----------
    logits : tensor of shape (batch, n_flows, n_clusters, height, width)
    codebook : FlowCodebook or tensor of shape (n_clusters, 2)

    Returns
    -------
    tensor of shape (batch, n_flows, 2, height, width)

    Raises
    ------
    ValueError
        If the shapes disagree or the codebook is unfitted.
    """
    if isinstance(codebook, FlowCodebook):
        codebook._check_fitted()
        codebook = codebook.centres
    check_shape(codebook, "codebook", (None, 2), "(n_clusters, 2)")
    k = len(codebook)
    check_shape(logits, "logits", (None, None, k, None, None), f"(batch, n_flows, {k}, height, width)")
    return torch.einsum("bnkhw,kc->bnchw", logits.softmax(dim=2), codebook.to(logits.dtype))


def flow_classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of per-patch cluster logits against codebook indices (:meth:`FlowCodebook.assign`).

    Parameters
    ----------
    logits : tensor of shape (batch, n_flows, n_clusters, height, width)
    targets : long tensor of shape (batch, n_flows, height, width)

    Returns
    -------
    scalar tensor
    """
    check_shape(logits, "logits", (None, None, None, None, None), "(batch, n_flows, n_clusters, height, width)")
    b, n, k, h, w = logits.shape
    if targets.shape != (b, n, h, w):
        raise ValueError(
            f"targets: expected shape {(b, n, h, w)} (the logits' grid), got {tuple(targets.shape)}; resample the "
            "flows to the decoder's grid (pipelines.features.backbones.rescale_flow) before assigning clusters."
        )
    return F.cross_entropy(logits.reshape(b * n, k, h, w), targets.reshape(b * n, h, w))


@dataclass(frozen=True)
class FlowDecoderConfig:
    """Architecture of the BrainNRDS flow decoder (reference C.4)."""

    n_voxels: int = 4500  # fMRI vector length per TR
    window: int = 5  # TRs per input window (paper: 5)
    fmri_hidden: int = 512  # hidden width of the fMRI MLP
    fmri_dim: int = 64  # channels of the broadcast fMRI vector
    grid_size: int = 32  # flow grid (grid_size x grid_size patches) (paper: 32)
    image_size: int = 64  # first frames are (3, image_size, image_size) in [0, 1]
    stem_channels: tuple[int, ...] = (32, 64)  # conv stem widths; stride 2 after the first, then pooled to the grid
    position_channels: int = 8  # learned position map channels (0: none; not in the paper)
    hidden_channels: int = 128  # width of the 1x1-conv trunk
    n_blocks: int = 3  # residual 1x1-conv blocks (paper: 3)
    n_flows: int = 3  # flow fields per window (paper: 3 per TR)
    n_clusters: int = 40  # k of the flow codebook (paper: 40)
    dropout: float = 0.1  # in the fMRI MLP
    readout_rank: int = 0  # > 0: + a rank-limited Linear of the window to the flow grid, fed to the trunk (not C.4)


class _Residual1x1(nn.Module):
    """x + Conv1x1(GELU(GroupNorm(Conv1x1(x))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.GroupNorm(8, channels), nn.GELU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class FlowDecoder(SavesPretrained, nn.Module):
    """fMRI window + first frame → logits over the flow codebook for every grid patch of ``n_flows`` flow fields.

    fMRI (batch, window, n_voxels) is flattened through an MLP (Linear, LN, GELU, Dropout, Linear) to ``fmri_dim``
    and broadcast over the grid; the first frame goes through a conv stem pooled to the grid; both (and a learned
    position map) are concatenated, mapped by a 1×1 conv to ``hidden_channels``, passed through ``n_blocks`` residual
    1×1-conv blocks and a 1×1 conv to ``n_flows × n_clusters`` logits. Decode with :meth:`expected_flow`; train with
    :func:`flow_classification_loss` against ``codebook.assign(flows)``. Deviations: see the module docstring.
    """

    CONFIG = FlowDecoderConfig

    def __init__(self, config: FlowDecoderConfig):
        super().__init__()
        c = config
        for name in ("n_voxels", "window", "fmri_hidden", "fmri_dim", "grid_size", "image_size"):
            check_positive(c, name)
        for name in ("hidden_channels", "n_flows", "n_clusters"):
            check_positive(c, name)
        if c.position_channels < 0 or c.n_blocks < 0 or not c.stem_channels or min(c.stem_channels) < 1:
            raise ValueError(
                "FlowDecoderConfig: expected position_channels >= 0, n_blocks >= 0 and at least one positive stem "
                f"width, got position_channels={c.position_channels}, n_blocks={c.n_blocks}, "
                f"stem_channels={c.stem_channels}."
            )
        if c.hidden_channels % 8:
            raise ValueError(
                "FlowDecoderConfig.hidden_channels: expected a multiple of 8 (GroupNorm groups), "
                f"got {c.hidden_channels}."
            )
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"FlowDecoderConfig.dropout: expected a probability in [0, 1), got {c.dropout!r}.")
        if isinstance(c.readout_rank, bool) or not isinstance(c.readout_rank, int) or c.readout_rank < 0:
            raise ValueError(f"FlowDecoderConfig.readout_rank: expected an integer >= 0, got {c.readout_rank!r}.")
        self.config = config
        self.fmri_mlp = nn.Sequential(
            nn.Linear(c.window * c.n_voxels, c.fmri_hidden),
            nn.LayerNorm(c.fmri_hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.fmri_hidden, c.fmri_dim),
        )
        stem, c_in = [], 3
        for i, c_out in enumerate(c.stem_channels):
            stem += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1), nn.GELU()]
            c_in = c_out
        self.stem = nn.Sequential(*stem)
        self.position = nn.Parameter(torch.zeros(1, c.position_channels, c.grid_size, c.grid_size))
        nn.init.normal_(self.position, std=0.02)
        linear_channels = 0
        if c.readout_rank:
            linear_channels = c.n_flows * 2
            self.readout_in = nn.Linear(c.window * c.n_voxels, c.readout_rank, bias=False)
            self.readout_out = nn.Linear(c.readout_rank, linear_channels * c.grid_size**2)
        self.trunk = nn.Sequential(
            nn.Conv2d(c.fmri_dim + c_in + c.position_channels + linear_channels, c.hidden_channels, 1),
            *[_Residual1x1(c.hidden_channels) for _ in range(c.n_blocks)],
            nn.GELU(),
            nn.Conv2d(c.hidden_channels, c.n_flows * c.n_clusters, 1),
        )
        self.codebook = FlowCodebook(c.n_clusters)

    def forward(self, fmri: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
        """Per-patch cluster logits.

        Parameters
        ----------
        fmri : tensor of shape (batch, window, n_voxels)
        first_frame : tensor of shape (batch, 3, image_size, image_size), values in [0, 1]

        Returns
        -------
        tensor of shape (batch, n_flows, n_clusters, grid_size, grid_size)

        Raises
        ------
        ValueError
            If a shape does not match the config.
        """
        c = self.config
        check_shape(fmri, "fmri", (None, c.window, c.n_voxels), f"(batch, {c.window}, {c.n_voxels})")
        b = len(fmri)
        s = c.image_size
        check_shape(first_frame, "first_frame", (b, 3, s, s), f"({b}, 3, {s}, {s})")
        g = c.grid_size
        image = F.adaptive_avg_pool2d(self.stem(first_frame * 2 - 1), g)
        brain = self.fmri_mlp(fmri.flatten(1))[:, :, None, None].expand(-1, -1, g, g)
        parts = [brain, image, self.position.expand(b, -1, -1, -1)]
        if c.readout_rank:
            parts.append(self.linear_flow(fmri).flatten(1, 2))
        return self.trunk(torch.cat(parts, dim=1)).view(b, c.n_flows, c.n_clusters, g, g)

    def linear_flow(self, fmri: torch.Tensor) -> torch.Tensor:
        """The linear read-out's flows (``readout_rank`` > 0): (batch, n_flows, 2, grid_size, grid_size).

        Raises
        ------
        ValueError
            If the decoder has no read-out or ``fmri`` does not match the config.
        """
        c = self.config
        if not c.readout_rank:
            raise ValueError("linear_flow: expected a decoder built with readout_rank > 0, got readout_rank=0.")
        check_shape(fmri, "fmri", (None, c.window, c.n_voxels), f"(batch, {c.window}, {c.n_voxels})")
        g = c.grid_size
        return self.readout_out(self.readout_in(fmri.flatten(1))).view(len(fmri), c.n_flows, 2, g, g)

    def readout_parameters(self) -> list[nn.Parameter]:
        """The linear read-out's parameters (none without ``readout_rank``)."""
        if not self.config.readout_rank:
            return []
        return [*self.readout_in.parameters(), *self.readout_out.parameters()]

    def set_readout(self, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray) -> None:
        """Make the linear read-out (``readout_rank``) the best approximation of that rank of a linear map.

        Parameters
        ----------
        weight : array of shape (n_flows·2·grid_size², window·n_voxels)
            From the window flattened TR by TR to the flows flattened as (n_flows, 2, grid_size, grid_size), e.g.
            the ridge baseline fitted on training clips; or a pair of factors whose product it is
            (:func:`~pipelines.models.mind_animator.set_low_rank`).
        bias : array of shape (n_flows·2·grid_size²,)

        Raises
        ------
        ValueError
            If the decoder has no read-out or a shape differs.
        """
        if not self.config.readout_rank:
            raise ValueError("set_readout: expected a decoder built with readout_rank > 0, got readout_rank=0.")
        set_low_rank(self.readout_in, self.readout_out, weight, bias)

    def expected_flow(self, logits: torch.Tensor) -> torch.Tensor:
        """:func:`expected_flow` with this decoder's codebook: (batch, n_flows, 2, grid_size, grid_size)."""
        return expected_flow(logits, self.codebook)
