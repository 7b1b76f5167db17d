"""Train and evaluate the demo-tier frame classifier (pipelines.models.classifier) on the simulated categories.

Loss: cross-entropy of random training frames against their clip's category. Augmentation keeps the category: a
random resized crop of at least 80 % of the frame's area (aspect ratio 3/4 to 4/3), a horizontal flip with
probability 1/2 (a mirrored object is the same object; captions and directions play no part here, unlike in the
CLIP trainer) and a brightness factor in [0.9, 1.1]. Checkpoints are selected on the error rate over every
validation frame; the reported accuracies come from the test split, per frame and per clip (the demo video
classifier averages the frame logits over a clip).

This classifier is an instrument: it scores the renderer's samples and the reconstructions by their category, which
in the simulation is the object's *shape* (colour, texture, background and motion are drawn independently of it).
Two options make it read the shape (both in the demo preset; README, "The frame classifier reads the shape"):

- ``corpus_runs``: also train on simulated movies no subject saw (:meth:`BackboneData.corpus`, shared with the CLIP
  trainer). The subject's 1,190 training clips show each object in few colour/background combinations, and a
  classifier trained on them alone learns those (test frame accuracy 0.50, chance 0.083).
- ``colour``: permute the colour channels and scale the saturation by a factor in [0.5, 1], so colour cannot name
  the category; ``blur``: a Gaussian blur of random width (sigma uniform in [0, blur] pixels of the input) on half
  the frames, because reconstructions and the VAE's decodings are blurrier than the frames it learns from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.features import demo_tier
from pipelines.features.backbones import load_backbone, to_tensor
from pipelines.models.classifier import FrameClassifier
from pipelines.models.io import meta_matches
from pipelines.training.backbones.data import BackboneData
from pipelines.training.loop import LoopConfig, checkpoint_step, train

MIN_CROP_AREA = 0.8  # smallest random crop, as a fraction of the frame's area
ASPECT_RANGE = (3 / 4, 4 / 3)  # random crop aspect ratios (width / height), log-uniform
BRIGHTNESS = 0.1  # images are multiplied by a factor in [1 - BRIGHTNESS, 1 + BRIGHTNESS]
MIN_SATURATION = 0.5  # with colour augmentation, saturation is scaled by a factor in [MIN_SATURATION, 1]
BLUR_PROBABILITY = 0.5  # with blur augmentation, the share of frames blurred
EVAL_BATCH = 512  # frames per forward pass in validation and evaluation


def _resized(frames: np.ndarray, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames (n, height, width, 3) → (n, 3, size, size) in [0, 1], resized as the demo classifier's wrapper."""
    x = to_tensor(frames, device)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def augment(
    frames: np.ndarray, size: int, rng: np.random.Generator, colour: bool = False, blur: float = 0.0
) -> torch.Tensor:
    """Category-preserving augmentation: random resized crop, horizontal flip, brightness (and colour, blur).

    Parameters
    ----------
    frames : array of shape (n_frames, height, width, 3), uint8
    size : int
        Output side length.
    rng : numpy Generator
        Draws every random choice (crops, flips, brightness, ...), so a batch is a function of the generator.
    colour : bool
        Also permute the colour channels at random and scale the saturation by a factor in [MIN_SATURATION, 1].
    blur : float
        If positive, blur a random half of the frames with a Gaussian of sigma uniform in [0, blur] (output pixels).

    Returns
    -------
    tensor of shape (n_frames, 3, size, size), float32 in [0, 1]
    """
    n, height, width = frames.shape[:3]
    area = rng.uniform(MIN_CROP_AREA, 1.0, n)
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RANGE), n))
    crop_w = np.minimum(width, np.round(width * np.sqrt(area * aspect))).astype(int)
    crop_h = np.minimum(height, np.round(height * np.sqrt(area / aspect))).astype(int)
    x0 = rng.integers(0, width - crop_w + 1)
    y0 = rng.integers(0, height - crop_h + 1)
    flip = rng.random(n) < 0.5
    gain = torch.from_numpy(rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS, n).astype(np.float32))
    images = to_tensor(frames)
    out = []
    for i in range(n):
        crop = images[i : i + 1, :, y0[i] : y0[i] + crop_h[i], x0[i] : x0[i] + crop_w[i]]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(crop.flip(-1) if flip[i] else crop)
    images = (torch.cat(out) * gain[:, None, None, None]).clamp(0, 1)
    if colour:
        order = torch.from_numpy(np.argsort(rng.random((n, 3)), axis=1))
        images = torch.gather(images, 1, order[:, :, None, None].expand_as(images))
        saturation = torch.from_numpy(rng.uniform(MIN_SATURATION, 1.0, n).astype(np.float32))[:, None, None, None]
        images = images * saturation + images.mean(dim=1, keepdim=True) * (1 - saturation)
    if blur > 0:
        sigma = rng.uniform(0.0, blur, n) * (rng.random(n) < BLUR_PROBABILITY)
        images = gaussian_blur(images, sigma)
    return images


def gaussian_blur(images: torch.Tensor, sigma: np.ndarray) -> torch.Tensor:
    """Blur each image with its own isotropic Gaussian (sigma in pixels; 0 leaves the image as it is).

    Parameters
    ----------
    images : tensor of shape (n, channels, height, width)
    sigma : array of shape (n,)

    Returns
    -------
    tensor of the shape of ``images``; borders are reflected, so a flat image stays flat.
    """
    n, channels, height, width = images.shape
    radius = int(np.ceil(3 * max(float(np.max(sigma, initial=0.0)), 1e-3)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    safe = np.maximum(np.asarray(sigma, np.float64), 1e-3)[:, None]  # sigma 0: a unit impulse
    kernels = np.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    kernels = torch.from_numpy((kernels / kernels.sum(axis=1, keepdims=True)).astype(np.float32))
    kernels = kernels.repeat_interleave(channels, dim=0)  # one kernel per (image, channel)
    x = images.reshape(1, n * channels, height, width)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=n * channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=n * channels)
    return x.reshape(n, channels, height, width)


def frame_batches(
    frames: np.ndarray, category_ids: np.ndarray, size: int, batch_size: int, colour: bool = False, blur: float = 0.0
) -> Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A batch sampler of augmented random frames of random clips with their clip's category.

    Parameters
    ----------
    frames : array of shape (n_clips, n_frames, height, width, 3), uint8
    category_ids : array of shape (n_clips,), int
    size : int
        The classifier's input size.
    batch_size : int
    colour, blur
        The optional augmentations of :func:`augment`.

    Returns
    -------
    callable
        rng → (images, labels): tensors of shape (batch_size, 3, size, size), float32 in [0, 1], and
        (batch_size,), int64.
    """

    def sample(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clips = rng.integers(len(frames), size=batch_size)
        frame = rng.integers(frames.shape[1], size=batch_size)
        images = augment(frames[clips, frame], size, rng, colour, blur)
        return images, torch.from_numpy(np.asarray(category_ids)[clips])

    return sample


def classifier_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the model's logits on (images, labels)."""
    device = next(model.parameters()).device
    images, labels = (t.to(device) for t in batch)
    return F.cross_entropy(model(images), labels)


def _check_labels(data: BackboneData, split: str) -> np.ndarray:
    category_ids = np.asarray(data.labels[split]["category_id"])
    if category_ids.size and not (0 <= category_ids.min() and category_ids.max() < len(data.categories)):
        raise ValueError(
            f"data.labels[{split!r}]['category_id']: expected values in 0..{len(data.categories) - 1} "
            f"({len(data.categories)} categories), got {category_ids.min()}..{category_ids.max()}."
        )
    return category_ids


def train_frame_classifier(
    data: BackboneData,
    arch: demo_tier.DemoBackbonesConfig,
    loop: LoopConfig,
    backbones_dir: str | Path,
    workdir: str | Path,
    device: str = "cpu",
    corpus_runs: int = 0,
    colour: bool = False,
    blur: float = 0.0,
) -> dict:
    """Train the demo frame classifier on training frames, select on validation error, save it.

    Parameters
    ----------
    data : BackboneData
        Frames of shape (n_clips, n_frames, height, width, 3) and ``category_id`` of shape (n_clips,) per split.
    arch : DemoBackbonesConfig
        Its ``frame_classifier`` section is the architecture; its ``labels`` are replaced by ``data.categories``.
    loop : LoopConfig
    backbones_dir : str or Path
        The model is saved to ``backbones_dir/frame_classifier`` (read by ``load_backbone("frame_classifier" or
        "video_classifier", "demo", backbones_dir)``), with the returned fields but ``n_params`` and ``history`` in
        its ``meta.json``.
    workdir : str or Path
        This role's checkpoint folder; an interrupted run there is resumed. A finished run is not repeated: the call
        returns at once and leaves ``backbones_dir/frame_classifier`` as it is if it already holds that run's
        weights (so its ``meta.json`` keeps the training time).
    device : str
    corpus_runs : int
        Also train on this many simulated movies no subject saw (:meth:`BackboneData.corpus`); validation and test
        stay the subject's.
    colour, blur
        The optional augmentations of :func:`augment`.

    Returns
    -------
    dict
        ``data_key``, ``steps``, ``start_step`` (where this call began: ``steps`` if it only reloaded a finished
        run), ``best_step``, ``best_score`` (validation error rate per frame), ``best_val_acc``, ``seconds`` (this
        call), ``corpus_runs``, ``colour``, ``blur``, ``n_train_clips``, ``n_params`` and ``history`` (the loop's
        validation records).

    Raises
    ------
    ValueError
        If a split lacks frames, the validation split is empty, a category id is out of range, ``corpus_runs`` is
        negative or ``blur`` is negative.
    """
    start = time.time()
    if corpus_runs < 0 or blur < 0:
        raise ValueError(f"corpus_runs and blur: expected values >= 0, got {corpus_runs} and {blur}.")
    train_frames, val_frames = data.frames("train"), data.frames("val")
    train_ids, val_ids = _check_labels(data, "train"), _check_labels(data, "val")
    if len(val_frames) == 0:
        raise ValueError(
            "data.split('val') has 0 clips; expected at least 1 to select checkpoints. "
            "Prepare the data with a validation segment."
        )
    if corpus_runs:
        corpus = data.corpus(corpus_runs)
        train_frames = np.concatenate([train_frames, corpus["frames"]])
        train_ids = np.concatenate([train_ids, corpus["category_id"]])
    options = {"corpus_runs": corpus_runs, "colour": colour, "blur": blur}
    config = replace(arch.frame_classifier, labels=tuple(data.categories))
    size = config.image_size
    val_images = val_frames.reshape(-1, *val_frames.shape[2:])
    val_labels = torch.from_numpy(np.repeat(val_ids, val_frames.shape[1]))

    torch.manual_seed(loop.seed)
    model = FrameClassifier(config).to(device)

    def validate(model: torch.nn.Module) -> float:
        predicted = torch.cat(
            [
                model(_resized(val_images[i : i + EVAL_BATCH], size, device)).argmax(dim=1).cpu()
                for i in range(0, len(val_images), EVAL_BATCH)
            ]
        )
        return float((predicted != val_labels).float().mean())

    sample_batch = frame_batches(train_frames, train_ids, size, loop.batch_size, colour, blur)
    start_step = checkpoint_step(workdir)  # where this call starts
    model, result = train("frame_classifier", model, sample_batch, classifier_loss, validate, loop, workdir)

    meta = {"data_key": data.dataset.key, "steps": loop.steps, "start_step": start_step,
            "best_step": result.best_step, "best_score": result.best_score, "best_val_acc": 1 - result.best_score,
            "seconds": time.time() - start, **options, "n_train_clips": len(train_frames)}  # fmt: skip
    target = Path(backbones_dir) / "frame_classifier"
    if not (start_step == loop.steps and meta_matches(target, meta)):
        model.save_pretrained(target, {"role": "frame_classifier", **meta})
    return {**meta, "n_params": sum(p.numel() for p in model.parameters()), "history": result.history}


def evaluate_classifier(data: BackboneData, backbones_dir: str | Path, device: str = "cpu") -> dict:
    """Test-split accuracy of the saved demo frame classifier, per frame and per clip (frame-averaged logits).

    Parameters
    ----------
    data : BackboneData
    backbones_dir : str or Path
        Holds ``frame_classifier/``; both classifiers are loaded with ``load_backbone``.
    device : str

    Returns
    -------
    dict
        ``frame_classifier_acc`` (fraction of test frames), ``video_classifier_acc`` (fraction of test clips),
        ``classifier_chance`` (1 / n_categories), ``classifier_n_frames`` and ``classifier_n_clips``.

    Raises
    ------
    ValueError
        If the test split lacks frames, a category id is out of range, or the saved classifier's labels are not
        ``data.categories``.
    FileNotFoundError
        If ``backbones_dir/frame_classifier`` does not exist.
    """
    frames, category_ids = data.frames("test"), _check_labels(data, "test")
    frame_classifier = load_backbone("frame_classifier", "demo", backbones_dir, device)
    if tuple(frame_classifier.labels) != tuple(data.categories):
        raise ValueError(
            f"{Path(backbones_dir) / 'frame_classifier'} classifies {list(frame_classifier.labels)}; expected the "
            f"data's categories {list(data.categories)}. Train the classifier on this simulated subject."
        )
    video_classifier = load_backbone("video_classifier", "demo", backbones_dir, device)
    n_frames = frames.shape[1]
    per_frame = frames.reshape(-1, *frames.shape[2:])
    frame_pred = np.concatenate(
        [frame_classifier.logits(per_frame[i : i + EVAL_BATCH]).argmax(1) for i in range(0, len(per_frame), EVAL_BATCH)]
    )
    clips_per_batch = max(1, EVAL_BATCH // n_frames)
    video_pred = np.concatenate(
        [
            video_classifier.logits(frames[i : i + clips_per_batch]).argmax(1)
            for i in range(0, len(frames), clips_per_batch)
        ]
    )
    return {
        "frame_classifier_acc": float(np.mean(frame_pred == np.repeat(category_ids, n_frames))),
        "video_classifier_acc": float(np.mean(video_pred == category_ids)),
        "classifier_chance": 1.0 / len(data.categories),
        "classifier_n_frames": int(len(per_frame)),
        "classifier_n_clips": int(len(frames)),
    }
