"""What the stage-1 decoders learn from: each clip's fMRI window and its teacher features, per split.

The teachers (CLIP, the image VAE, RAFT) come from a backbone tier (``demo``: the folder ``train-backbones`` wrote;
``full``: the published weights). Their outputs are cached on disk keyed by (prepared data, backbone weights), so a
second run reads them back. Captions are the simulator's own for a simulated subject and BLIP-2 captions (full
tier) otherwise.

Only the training split is ever used to fit anything (decoders, codebooks, ridge weights); the validation split
selects checkpoints and ridge penalties; the test split is read by evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import config_hash
from pipelines.data.cc2017 import CC2017Config, prepare_cc2017
from pipelines.data.dataset import PreparedDataset
from pipelines.features.backbones import load_backbone
from pipelines.features.extract import FeatureCache, clip_text_features, clip_text_tokens, extract, simulated_labels


@dataclass
class DecoderSplit:
    """Inputs and teacher targets of every clip of one split (n clips)."""

    fmri: np.ndarray  # (n, window, n_voxels) float32: the clip's volume at index ``centre`` and its neighbours
    captions: np.ndarray  # (n,) str
    text: np.ndarray  # (n, embed_dim) float32: CLIP text embedding of the caption (L2-normalised)
    video: np.ndarray  # (n, embed_dim) float32: mean CLIP image embedding of the clip's frames (L2-normalised)
    tokens: np.ndarray  # (n, n_tokens, token_dim) float32: CLIP text-tower outputs = the renderer's conditioning
    latents: np.ndarray  # (n, n_frames, channels, h, w) float32: scaled VAE latents of every frame
    flows: np.ndarray  # (n, n_flows, 2, grid, grid) float32: RAFT flow of frames ``stride`` apart, grid pixels
    first_frames: np.ndarray  # (n, height, width, 3) uint8: each clip's first frame
    category: np.ndarray | None  # (n,) int: simulated category (None for real data)
    direction: np.ndarray | None  # (n,) int: simulated motion-direction bin (None for real data)

    def __len__(self) -> int:
        return len(self.fmri)


@dataclass
class DecoderData:
    """The decoders' data set: prepared fMRI windows and teacher features of train, val and test."""

    dataset: PreparedDataset
    splits: dict[str, DecoderSplit]
    centre: int  # index of the clip's own (HRF-shifted) volume inside the window
    teachers: str  # names of the teacher backbones, for run metadata
    flow_stride: int = 2  # clip frames between the two frames of each teacher flow in ``flows``

    @property
    def n_voxels(self) -> int:
        return self.dataset.n_voxels

    def window(self, split: str, size: int) -> np.ndarray:
        """fMRI windows of ``size`` TRs centred on the clip's volume: (n, size, n_voxels) float32."""
        fmri = self.splits[split].fmri
        half = size // 2
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < 1
            or size % 2 == 0
            or not 0 <= self.centre - half
            or self.centre + half >= fmri.shape[1]
        ):
            raise ValueError(
                f"window size: expected an odd number of TRs within the prepared window of {fmri.shape[1]} "
                f"(centre {self.centre}), got {size}."
            )
        return fmri[:, self.centre - half : self.centre + half + 1]

    def volume(self, split: str) -> np.ndarray:
        """The clip's own volume: (n, n_voxels) float32."""
        return self.splits[split].fmri[:, self.centre]


def _full_tier_captions(root: Path, dataset: PreparedDataset, split: str, tier: str, cache: FeatureCache) -> np.ndarray:
    if tier != "full":
        raise ValueError(
            f"{root}: not a simulated subject (no groundtruth/twin.json), so captions must come from the full-tier "
            f"captioner (BLIP-2); got tier {tier!r}. Use --tier full on a machine with the published weights."
        )
    from pipelines.features.full_tier import load_captioner

    return extract(dataset, split, "caption", load_captioner(), cache)


def load_decoder_data(
    root: str | Path,
    data_config: CC2017Config,
    backbones_dir: str | Path | None,
    tier: str = "demo",
    flow_grid: int = 32,
    flow_stride: int = 2,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> DecoderData:
    """Prepare the subject with ``data_config`` (HRF mode ``window``) and compute or read the teacher features.

    Parameters
    ----------
    root : str or Path
        A CC2017-layout subject (the simulated demo subject, or CC2017 itself with ``tier="full"``).
    backbones_dir : str or Path, optional
        The demo tier's folder (``train-backbones --out``); ignored for the full tier.
    flow_grid, flow_stride : int
        The flow decoder's grid and the frames between the two frames of a teacher flow.
    cache_dir : str or Path, optional
        Prepared data and features go under it (default ``$MINDREEL_CACHE``).

    Raises
    ------
    ValueError
        If the prepared fMRI is not windowed, or the frames are missing.
    """
    root = Path(root)
    dataset = prepare_cc2017(root, data_config, cache_dir)
    sample = dataset.splits["train"].fmri
    if sample.ndim != 3:
        raise ValueError(
            f"{root}: expected windowed fMRI of shape (n_clips, window, n_voxels) (data.hrf.mode: window), got shape "
            f"{sample.shape}."
        )
    cache = FeatureCache(Path(cache_dir) / "features" if cache_dir is not None else None)
    clip = load_backbone("clip", tier, backbones_dir, device)
    vae = load_backbone("vae", tier, backbones_dir, device)
    raft = load_backbone("raft", tier, backbones_dir, device)
    simulated = (root / "groundtruth" / "twin.json").is_file()
    splits = {}
    for name, split in dataset.splits.items():
        labels = simulated_labels(root, split) if simulated else None
        captions = labels["caption"] if simulated else _full_tier_captions(root, dataset, name, tier, cache)
        key = f"captions-{config_hash(captions.tolist())}"
        text = cache.get(
            dataset.key, clip.name, f"text-{key}", name, lambda c=captions: clip_text_features(list(c), clip)
        )
        tokens = cache.get(
            dataset.key, clip.name, f"tokens-{key}", name, lambda c=captions: clip_text_tokens(list(c), clip)
        )
        images = extract(dataset, name, "clip_image", clip, cache)
        video = images.mean(axis=1)
        video = video / np.linalg.norm(video, axis=1, keepdims=True).clip(min=1e-8)
        flows = extract(dataset, name, "flow", raft, cache, grid=flow_grid, stride=flow_stride)
        splits[name] = DecoderSplit(
            fmri=np.asarray(split.fmri, np.float32),
            captions=np.asarray(captions, str),
            text=np.asarray(text, np.float32),
            video=np.asarray(video, np.float32),
            tokens=np.asarray(tokens, np.float32),
            latents=np.asarray(extract(dataset, name, "vae_latent", vae, cache), np.float32),
            flows=np.ascontiguousarray(np.asarray(flows, np.float32).transpose(0, 1, 4, 2, 3)),
            first_frames=np.asarray(split.frames[:, 0]),
            category=None if labels is None else labels["category_id"],
            direction=None if labels is None else labels["direction_bin"],
        )
    teachers = f"{clip.name}|{vae.name}|{raft.name}"
    return DecoderData(dataset, splits, centre=data_config.hrf.before, teachers=teachers, flow_stride=flow_stride)
