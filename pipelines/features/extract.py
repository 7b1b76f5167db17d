"""Teacher features of a prepared dataset's clips, computed in batches and cached on disk.

A feature is cached under ``<cache>/features/<data key>/<backbone name>/<feature>_<split>.npy``: the data key is
the prepared dataset's hash (config and input files), the backbone name identifies its weights (the demo tier
hashes its safetensors; the full tier names the published weights). Recomputing is never needed unless one of
them changes.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipelines.data.dataset import PreparedDataset, Split, default_cache_dir
from pipelines.features.backbones import (
    Classifier,
    FlowEstimator,
    ImageTextEncoder,
    LatentAutoencoder,
    rescale_flow,
)


class FeatureCache:
    """npy files keyed by (data key, backbone name, feature, split)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "features"

    def path(self, data_key: str, backbone: str, feature: str, split: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._+-]", "_", backbone)
        return self.root / data_key / safe / f"{feature}_{split}.npy"

    def get(
        self, data_key: str, backbone: str, feature: str, split: str, compute: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """The cached array (memory-mapped), or ``compute()`` saved atomically first."""
        path = self.path(data_key, backbone, feature, split)
        if path.is_file():
            return np.load(path, mmap_mode="r")
        array = np.asarray(compute())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npy", dir=path.parent)
        os.close(fd)
        try:
            np.save(tmp, array)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return np.load(path, mmap_mode="r")


def _batched(fn: Callable[[np.ndarray], np.ndarray], items: np.ndarray, batch_size: int, desc: str) -> np.ndarray:
    """Apply ``fn`` to consecutive batches of ``items`` (first axis) and concatenate, with a progress bar."""
    if len(items) == 0:
        raise ValueError(f"{desc}: expected at least one item, got an empty array.")
    out = [fn(items[i : i + batch_size]) for i in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch")]
    return np.concatenate(out)


def _frames(split: Split, name: str) -> np.ndarray:
    if split.frames is None:
        raise ValueError(f"split {name}: has no frames; prepare the dataset with clips.load_frames: true.")
    return split.frames


def clip_image_features(split: Split, encoder: ImageTextEncoder, batch_size: int = 256) -> np.ndarray:
    """CLIP image embeddings of every frame: array of shape (n_clips, n_frames, embed_dim), float32."""
    frames = _frames(split, "clip_image")
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    return _batched(encoder.encode_image, flat, batch_size, "CLIP images").reshape(n, t, -1)


def clip_text_features(captions: list[str], encoder: ImageTextEncoder, batch_size: int = 256) -> np.ndarray:
    """CLIP text embeddings: array of shape (n_captions, embed_dim), float32."""
    items = np.array(captions, dtype=object)
    return _batched(lambda b: encoder.encode_text(list(b)), items, batch_size, "CLIP texts")


def clip_text_tokens(captions: list[str], encoder: ImageTextEncoder, batch_size: int = 256) -> np.ndarray:
    """Per-token outputs of the CLIP text tower (the renderer's conditioning): (n_captions, context_length, width)."""
    items = np.array(captions, dtype=object)
    return _batched(lambda b: encoder.text_tokens(list(b)), items, batch_size, "CLIP text tokens")


def vae_latent_features(split: Split, vae: LatentAutoencoder, batch_size: int = 64) -> np.ndarray:
    """Scaled VAE latent means of every frame: array of shape (n_clips, n_frames, channels, h, w), float32."""
    frames = _frames(split, "vae")
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    latents = _batched(vae.encode, flat, batch_size, "VAE latents")
    return latents.reshape(n, t, *latents.shape[1:])


def flow_features(
    split: Split, estimator: FlowEstimator, grid: int | None = None, stride: int = 1, batch_size: int = 16
) -> np.ndarray:
    """Optical flow between frames ``stride`` apart of every clip: frames (0, s), (s, 2s), … within the clip.

    Parameters
    ----------
    grid : int, optional
        Resample each flow field to grid x grid (BrainNRDS decodes 32 x 32), in pixels of that grid.
    stride : int
        Frames between the two frames of a pair (1: consecutive frames; BrainNRDS's 3 flows per 2-s TR from 8
        frames: 2).

    Returns
    -------
    array of shape (n_clips, (n_frames - 1) // stride, height, width, 2), float32 (height = width = grid when given)
    """
    frames = _frames(split, "flow")
    n, t = frames.shape[:2]
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride < t:
        raise ValueError(f"stride: expected an integer in [1, {t - 1}] for clips of {t} frames, got {stride!r}.")
    starts = np.arange(0, t - stride, stride)
    first = frames[:, starts].reshape(n * len(starts), *frames.shape[2:])
    second = frames[:, starts + stride].reshape(n * len(starts), *frames.shape[2:])
    pairs = np.stack([first, second], axis=1)

    def run(batch: np.ndarray) -> np.ndarray:
        flow = estimator(batch[:, 0], batch[:, 1])
        if grid is None:
            return flow
        return rescale_flow(torch.from_numpy(flow).permute(0, 3, 1, 2), grid, grid).permute(0, 2, 3, 1).numpy()

    flows = _batched(run, pairs, batch_size, "optical flow")
    return flows.reshape(n, len(starts), *flows.shape[1:])


def classifier_features(split: Split, classifier: Classifier, video: bool = False, batch_size: int = 128) -> np.ndarray:
    """Classifier logits: (n_clips, n_frames, n_labels) per frame, or (n_clips, n_labels) with ``video=True``."""
    frames = _frames(split, "classifier")
    if video:
        return _batched(classifier.logits, frames, max(1, batch_size // frames.shape[1]), "video logits")
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    return _batched(classifier.logits, flat, batch_size, "frame logits").reshape(n, t, -1)


def caption_features(
    split: Split, captioner: Callable[[np.ndarray], list[str]], frame_index: int | None = None, batch_size: int = 16
) -> np.ndarray:
    """Captions of every clip from one of its frames (full tier: BLIP-2, run once and cached).

    Parameters
    ----------
    captioner : callable
        frames (n, height, width, 3) uint8 → list of n captions.
    frame_index : int, optional
        The frame captioned (default the middle one; NeuroClips captions frame 2 of 6, Mind-Animator the first
        and last frames).

    Returns
    -------
    array of shape (n_clips,), str
    """
    frames = _frames(split, "caption")
    index = frames.shape[1] // 2 if frame_index is None else frame_index
    if not -frames.shape[1] <= index < frames.shape[1]:
        raise ValueError(f"frame_index: expected 0..{frames.shape[1] - 1}, got {frame_index}.")
    return _batched(lambda b: np.array(captioner(b), dtype=str), frames[:, index], batch_size, "captions")


def simulated_labels(root: str | Path, split: Split) -> dict[str, np.ndarray]:
    """The simulator's own labels of every clip of a split (the demo tier's captions and classes).

    Returns
    -------
    dict
        ``caption`` (array of str), ``category_id``, ``direction_bin`` (int arrays), each of shape (n_clips,).
    """
    from pipelines.data.twin import groundtruth

    plans = {run: groundtruth.load_plan(root, run) for run in dict.fromkeys(split.run.tolist())}
    rows = [plans[run][int(clip)] for run, clip in zip(split.run, split.clip, strict=True)]
    return {
        "caption": np.array([r["caption"] for r in rows]),
        "category_id": np.array([r["category_id"] for r in rows], dtype=np.int64),
        "direction_bin": np.array([r["direction_bin"] for r in rows], dtype=np.int64),
    }


FEATURES = {
    "clip_image": clip_image_features,
    "vae_latent": vae_latent_features,
    "flow": flow_features,
    "frame_logits": classifier_features,
    "caption": caption_features,
}


def extract(
    dataset: PreparedDataset, split: str, feature: str, backbone, cache: FeatureCache | None = None, **kwargs
) -> np.ndarray:
    """A cached feature of one split: ``feature`` is a key of FEATURES, ``backbone`` the matching wrapper.

    Raises
    ------
    ValueError
        For an unknown feature or split.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature: expected one of {sorted(FEATURES)}, got {feature!r}.")
    if split not in dataset.splits:
        raise ValueError(f"split: expected one of {sorted(dataset.splits)}, got {split!r}.")
    cache = cache or FeatureCache()
    suffix = "".join(f"-{k}{v}" for k, v in sorted(kwargs.items()))
    return cache.get(
        dataset.key,
        backbone.name,
        feature + suffix,
        split,
        lambda: FEATURES[feature](dataset.splits[split], backbone, **kwargs),
    )
