"""The five training stages: how each decoder is built from the data, what a batch is, its loss, its validation score
and its predictions.

Every stage reads the ``train`` split for batches (and the flow codebook) and the ``val`` split for its validation
score, which selects the checkpoint. Nothing here reads ``test``: :mod:`pipelines.training.decoders.evaluate` does,
through :meth:`Stage.predict`.

| stage | model | input | target | validation score (lower is better) |
|---|---|---|---|---|
| semantic | Mind-Animator ``SemanticDecoder`` | clip volume | CLIP text / video embedding, text tokens | mean caption rank |
| structure | Mind-Animator ``StructureDecoder`` | clip volume | first-frame VAE latent | latent MSE |
| motion | Mind-Animator ``ConsistencyMotionGenerator`` | clip volume + first latent | latents of frames 1… (+ RAFT flow) | generated MSE |
| flow | BrainNRDS ``FlowDecoder`` | 5-TR window + first frame | RAFT flow on the grid | EPE (grid pixels) |
| fmri-encoder | NeuroCine ``FMRIEncoder`` | 3-TR window | CLIP embeddings, text tokens | mean caption rank |

With ``motion.model.warp_grid`` > 0 the motion generator warps each frame by a flow it decodes from the fMRI, and
``motion.train.flow_weight`` > 0 supervises that flow with the clip's mean RAFT flow per warp cell
(:meth:`MotionStage.teacher_warp`), as BrainNRDS supervises its flow decoder; the reference CMG has neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.evaluation.metrics import end_point_error
from pipelines.features.backbones import to_tensor
from pipelines.models.augment import sparsify, spatial_mask, temporal_interpolate
from pipelines.models.brainnrds import FlowDecoder, flow_classification_loss
from pipelines.models.mind_animator import (
    ConsistencyMotionGenerator,
    SemanticDecoder,
    StructureDecoder,
    consistency_loss,
    l1_weight_penalty,
    semantic_loss,
    structure_loss,
)
from pipelines.models.neurocine import FMRIEncoder, neurocine_loss, patchify
from pipelines.training.decoders.data import DecoderData
from pipelines.training.decoders.ridge import fit_ridge
from pipelines.training.loop import unwrap

EVAL_BATCH = 128


def caption_ranks(embeddings: np.ndarray, captions: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each clip's own caption among the split's distinct captions, by cosine similarity.

    Clips of one scene share a caption, so candidates are the distinct captions (identical captions would tie).

    Parameters
    ----------
    embeddings : array of shape (n, embed_dim)
        Predicted CLIP-space embeddings.
    captions : array of shape (n,), str
    text : array of shape (n, embed_dim)
        CLIP text embedding of each clip's caption.

    Returns
    -------
    ranks : int array of shape (n,)
        0 = the own caption is the most similar; ties count against the prediction; a NaN prediction ranks last.
    n_candidates : int
    """
    _, first, inverse = np.unique(captions, return_index=True, return_inverse=True)
    candidates = text[first] / np.linalg.norm(text[first], axis=1, keepdims=True).clip(min=1e-8)
    pred = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-8)
    similarity = np.nan_to_num(pred @ candidates.T, nan=-np.inf)  # a diverged (NaN) prediction ranks last
    own = similarity[np.arange(len(pred)), inverse]
    others = similarity > own[:, None]
    ties = (similarity == own[:, None]).sum(axis=1) - 1
    return others.sum(axis=1) + ties, len(candidates)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _tensor(array: np.ndarray, index: np.ndarray | slice | None = None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array if index is None else array[index], dtype=np.float32))


@torch.no_grad()
def _batched(fn, n: int, batch: int = EVAL_BATCH) -> Any:
    """Concatenate ``fn(slice)`` over consecutive slices of ``range(n)``; fn returns a tensor or a tuple of them."""
    parts = [fn(slice(i, min(i + batch, n))) for i in range(0, n, batch)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[j] for p in parts]).cpu().numpy() for j in range(len(parts[0])))
    return torch.cat(parts).cpu().numpy()


class Stage:
    """One decoder's training recipe over a :class:`DecoderData` (``config`` is the stage's *Stage dataclass)."""

    name: str

    def __init__(self, config: Any, data: DecoderData):
        self.config, self.data = config, data
        self.train_split, self.n_train = data.splits["train"], len(data.splits["train"])

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def prepare(self, model: torch.nn.Module) -> None:
        """Fit what the model needs from training data before the loop (e.g. a codebook)."""

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]] | None:
        """What the loop optimises, as parameter groups with an ``lr_scale`` each (None: every parameter at loop.lr).

        A model with a linear read-out started at the ridge map (``readout_parameters``) trains it at
        ``train.readout_lr_scale`` times the loop's rate: the rest of the model starts from scratch and needs the
        full rate, the read-out only refining (README, "Stage-1 decoders").

        Raises
        ------
        ValueError
            If ``train.readout_lr_scale`` is not a positive number.
        """
        scale = getattr(self.config.train, "readout_lr_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{self.name}.train.readout_lr_scale: expected a positive number, got {scale!r}.")
        readout = model.readout_parameters() if hasattr(model, "readout_parameters") else []
        if not readout or scale == 1:
            return None
        ids = {id(p) for p in readout}
        return [{"params": [p for p in model.parameters() if id(p) not in ids], "lr_scale": 1.0},
                {"params": readout, "lr_scale": scale}]  # fmt: skip

    def ridge_readout(self, target: Callable[[str], np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """The ridge map from :meth:`inputs` to ``target(split)`` on raw inputs, as factors and bias
        (:meth:`RidgeBaseline.factors`: weight (t, p) = left (t, n) @ right (n, p); bias (t,)).

        Fitted on the training split with the penalty chosen on validation, as the ridge baseline that
        ``evaluate-decoders`` reports for this stage (for the flow stage that baseline also reads a thumbnail of the
        first frame; this map reads the fMRI window alone). A decoder with a linear read-out starts from it.
        """
        x, y = ({s: flat(s) for s in ("train", "val")} for flat in (self.inputs, target))
        x, y = ({s: a[s].reshape(len(a[s]), -1) for s in a} for a in (x, y))
        return fit_ridge(x["train"], y["train"], x["val"], y["val"]).factors()

    def sample_batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        index = np.sort(rng.choice(self.n_train, size=min(self.config.loop.batch_size, self.n_train), replace=False))
        return self.batch("train", index)

    def inputs(self, split: str) -> np.ndarray:
        """The decoder's fMRI input for every clip of ``split`` (the table above)."""
        raise NotImplementedError

    def batch(self, split: str, index: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module) -> float:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------------


class _RetrievalStage(Stage):
    """Shared by the stages whose output lives in CLIP space: validation = mean normalised caption rank."""

    def embed(self, model: torch.nn.Module, fmri: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module) -> float:
        split = self.data.splits["val"]
        ranks, n = caption_ranks(self.embed(model, self.inputs("val")), split.captions, split.text)
        return float(ranks.mean() / max(1, n - 1))

    def batch(self, split, index):
        """(fMRI input, caption embedding, video embedding, conditioning tokens) of the clips at ``index``."""
        s = self.data.splits[split]
        return (_tensor(self.inputs(split), index), _tensor(s.text, index), _tensor(s.video, index),
                _tensor(s.tokens, index))  # fmt: skip


class SemanticStage(_RetrievalStage):
    name = "semantic"

    def build(self) -> SemanticDecoder:
        s = self.train_split
        model = replace(
            self.config.model,
            n_voxels=self.data.n_voxels,
            embed_dim=s.text.shape[1],
            n_tokens=s.tokens.shape[1],
            token_dim=s.tokens.shape[2],
        )
        return SemanticDecoder(model)

    def inputs(self, split: str) -> np.ndarray:
        return self.data.volume(split)

    def prepare(self, model: SemanticDecoder) -> None:
        """With ``linear_readout``, start the read-out at the ridge map from the volume to the caption embedding."""
        if model.config.linear_readout:
            model.set_readout(*self.ridge_readout(lambda split: self.data.splits[split].text))

    def loss(self, model, batch):
        fmri, text, video, tokens = batch
        t = self.config.train
        if t.sparsify > 0:
            fmri = sparsify(fmri, t.sparsify)
        out = model(fmri)
        loss = semantic_loss(
            out.embedding,
            text,
            video,
            out.tokens,
            tokens,
            unwrap(model).logit_scale,
            t.alpha,
            t.token_weight,
            t.soft_targets,
        ).total
        if t.embedding_mse > 0:
            loss = loss + t.embedding_mse * F.mse_loss(out.embedding, text)
        return loss

    def predict(self, model: SemanticDecoder, fmri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (n, embed_dim), tokens (n, n_tokens, token_dim)) of volumes (n, n_voxels)."""
        device = _device(model)
        return _batched(lambda i: tuple(model(_tensor(fmri, i).to(device))), len(fmri))

    def embed(self, model, fmri):
        return self.predict(model, fmri)[0]


class EncoderStage(_RetrievalStage):
    name = "fmri-encoder"

    def build(self) -> FMRIEncoder:
        s = self.train_split
        model = replace(
            self.config.model,
            n_voxels=self.data.n_voxels,
            embed_dim=s.text.shape[1],
            n_cond_tokens=s.tokens.shape[1],
            cond_dim=s.tokens.shape[2],
        )
        return FMRIEncoder(model)

    def inputs(self, split: str) -> np.ndarray:
        return self.data.window(split, self.config.model.window)

    def prepare(self, model: FMRIEncoder) -> None:
        """With ``readout_rank``, start the read-out at the ridge map from the window to the caption embedding."""
        if model.config.readout_rank:
            model.set_readout(*self.ridge_readout(lambda split: self.data.splits[split].text))

    def loss(self, model, batch):
        fmri, text, video, tokens = batch
        t, core = self.config.train, unwrap(model)
        patches = patchify(fmri, core.config.patch_size)
        interpolated, replaced = temporal_interpolate(patches, t.temporal_ratio)
        masked, token_mask = spatial_mask(interpolated, t.spatial_ratio)
        out = model(masked, token_mask=token_mask)
        return neurocine_loss(
            out, patches, token_mask, replaced, text, video, tokens, core.logit_scale, t.alpha, t.weights
        ).total

    def predict(self, model: FMRIEncoder, fmri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (n, embed_dim), conditioning (n, n_cond_tokens, cond_dim)) of windows (n, window, n_voxels)."""
        device = _device(model)

        def run(i):
            out = model(_tensor(fmri, i).to(device))
            return out.embedding, out.conditioning

        return _batched(run, len(fmri))

    def embed(self, model, fmri):
        return self.predict(model, fmri)[0]


class StructureStage(Stage):
    name = "structure"

    def build(self) -> StructureDecoder:
        shape = tuple(int(x) for x in self.train_split.latents.shape[2:])
        return StructureDecoder(replace(self.config.model, n_voxels=self.data.n_voxels, latent_shape=shape))

    def inputs(self, split: str) -> np.ndarray:
        return self.data.volume(split)

    def prepare(self, model: StructureDecoder) -> None:
        """With ``linear_readout``, start the linear path at the ridge map from the volume to the first latent."""
        if model.config.linear_readout:
            model.set_readout(*self.ridge_readout(lambda split: self.data.splits[split].latents[:, 0]))

    def batch(self, split, index):
        s = self.data.splits[split]
        return _tensor(self.inputs(split), index), _tensor(s.latents[:, 0], index)

    def loss(self, model, batch):
        fmri, target = batch
        t = self.config.train
        if t.sparsify > 0:
            fmri = sparsify(fmri, t.sparsify)
        loss = structure_loss(model(fmri), target)
        return loss + t.l1_weight * l1_weight_penalty(unwrap(model)) if t.l1_weight > 0 else loss

    def predict(self, model: StructureDecoder, fmri: np.ndarray) -> np.ndarray:
        """First-frame latents (n, channels, h, w) of volumes (n, n_voxels)."""
        device = _device(model)
        return _batched(lambda i: model(_tensor(fmri, i).to(device)), len(fmri))

    def validate(self, model):
        s = self.data.splits["val"]
        return float(np.mean((self.predict(model, self.inputs("val")) - s.latents[:, 0]) ** 2))


class MotionStage(Stage):
    name = "motion"

    def build(self) -> ConsistencyMotionGenerator:
        latents = self.train_split.latents
        model = replace(
            self.config.model,
            n_voxels=self.data.n_voxels,
            latent_shape=tuple(int(x) for x in latents.shape[2:]),
            n_frames=int(latents.shape[1]),
        )
        if self.config.train.flow_weight < 0:
            raise ValueError(f"motion.train.flow_weight: expected >= 0, got {self.config.train.flow_weight}.")
        if self.config.train.flow_weight > 0 and not model.warp_grid:
            raise ValueError(
                f"motion.train.flow_weight: expected 0 without a warp (motion.model.warp_grid = 0), got "
                f"{self.config.train.flow_weight}."
            )
        return ConsistencyMotionGenerator(model)

    def inputs(self, split: str) -> np.ndarray:
        return self.data.volume(split)

    def teacher_warp(self, split: str, index: np.ndarray) -> torch.Tensor:
        """The teacher flow as the CMG's warp target: (n, 2, g, g) in latent pixels per frame.

        The mean of the clip's RAFT flows (grid pixels per ``flow_stride`` frames), averaged over each of the g × g
        cells and converted to latent pixels per frame.
        """
        flows = _tensor(self.data.splits[split].flows, index)  # (n, n_flows, 2, grid, grid)
        latent_width = self.train_split.latents.shape[-1]
        per_frame = flows.mean(dim=1) * (latent_width / flows.shape[-1]) / self.data.flow_stride
        return F.adaptive_avg_pool2d(per_frame, self.config.model.warp_grid)

    def batch(self, split, index):
        fmri, latents = _tensor(self.inputs(split), index), _tensor(self.data.splits[split].latents, index)
        if self.config.train.flow_weight > 0:
            return fmri, latents, self.teacher_warp(split, index)
        return fmri, latents

    def loss(self, model, batch):
        fmri, latents = batch[:2]
        t = self.config.train
        if t.sparsify > 0:
            fmri = sparsify(fmri, t.sparsify)
        loss = consistency_loss(model(latents[:, :-1], fmri), latents[:, 1:])
        if t.flow_weight > 0:
            loss = loss + t.flow_weight * F.mse_loss(unwrap(model).clip_flow(fmri), batch[2])
        return loss + t.l1_weight * l1_weight_penalty(unwrap(model)) if t.l1_weight > 0 else loss

    def predict(self, model: ConsistencyMotionGenerator, fmri: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Latents of every frame (n, n_frames, channels, h, w), generated from ``first`` (n, channels, h, w)."""
        device = _device(model)
        return _batched(lambda i: model.generate(_tensor(first, i).to(device), _tensor(fmri, i).to(device)), len(fmri))

    def validate(self, model):
        latents = self.data.splits["val"].latents
        generated = self.predict(model, self.inputs("val"), latents[:, 0])
        return float(np.mean((generated[:, 1:] - latents[:, 1:]) ** 2))


class FlowStage(Stage):
    name = "flow"

    def build(self) -> FlowDecoder:
        s = self.train_split
        model = replace(
            self.config.model,
            n_voxels=self.data.n_voxels,
            window=int(s.fmri.shape[1]),
            image_size=int(s.first_frames.shape[1]),
            n_flows=int(s.flows.shape[1]),
            grid_size=int(s.flows.shape[-1]),
        )
        return FlowDecoder(model)

    def prepare(self, model: FlowDecoder) -> None:
        """Fit the codebook on training flows; with ``readout_rank``, start the linear flow at the ridge map."""
        vectors = self.train_split.flows.transpose(0, 1, 3, 4, 2).reshape(-1, 2)
        model.codebook.fit(vectors, seed=self.config.loop.seed, max_vectors=self.config.train.codebook_vectors)
        if model.config.readout_rank:
            model.set_readout(*self.ridge_readout(lambda split: self.data.splits[split].flows))

    def inputs(self, split: str) -> np.ndarray:
        return self.data.splits[split].fmri

    def batch(self, split, index):
        s = self.data.splits[split]
        return _tensor(self.inputs(split), index), to_tensor(s.first_frames[index]), _tensor(s.flows, index)

    def loss(self, model, batch):
        fmri, first, flows = batch
        core, logits = unwrap(model), model(fmri, first)
        loss = flow_classification_loss(logits, core.codebook.assign(flows))
        if self.config.train.epe_weight > 0:  # the metric itself, on the decoded (expected) flow
            loss = loss + self.config.train.epe_weight * (core.expected_flow(logits) - flows).norm(dim=2).mean()
        return loss

    def predict(self, model: FlowDecoder, fmri: np.ndarray, first_frames: np.ndarray) -> np.ndarray:
        """Expected flows (n, n_flows, 2, grid, grid) from windows (n, window, n_voxels) and uint8 first frames."""
        device = _device(model)

        def run(i):
            return model.expected_flow(model(_tensor(fmri, i).to(device), to_tensor(first_frames[i]).to(device)))

        return _batched(run, len(fmri))

    def validate(self, model):
        s = self.data.splits["val"]
        return end_point_error(self.predict(model, self.inputs("val"), s.first_frames), s.flows, axis=-3)


STAGES: dict[str, type[Stage]] = {
    "semantic": SemanticStage,
    "structure": StructureStage,
    "motion": MotionStage,
    "flow": FlowStage,
    "fmri-encoder": EncoderStage,
}


def make_stage(name: str, config: Any, data: DecoderData) -> Stage:
    """The stage called ``name`` over ``data`` with its *Stage config.

    Raises
    ------
    ValueError
        For an unknown stage name.
    """
    if name not in STAGES:
        raise ValueError(f"stage: expected one of {list(STAGES)}, got {name!r}.")
    return STAGES[name](config, data)
