"""Train and evaluate the demo-tier CLIP (a small open_clip model) on simulated frames and their captions.

Pairs: one random frame of a random training clip with that clip's caption (a caption describes the whole 2-s
clip, so every frame of it is a positive). Loss: open_clip's own ``ClipLoss`` (symmetric InfoNCE over the batch)
with the learnable temperature clamped at 100, as open_clip's training script does. No horizontal flips: captions
say "to the left". A batch never holds two clips with the same caption text, which would be false negatives.

Hard negatives (``hard_negatives=True``; BackboneTrainingConfig ``clip_hard_negatives``): each pair also brings its
caption with the object category swapped for a random other one (:func:`pipelines.data.twin.stimuli.swap_category`),
which the frame must rank below its own caption, as NegCLIP does (Yuksekgonul et al. 2023, ICLR). Without them a
batch's captions differ in colour and background before they differ in the object, and the model never needs to
see the object's shape (README, "Demo backbones": the category-swap test). ``negatives_per_pair`` (config
``clip_negatives_per_pair``) draws that many distinct swaps per pair instead of one; with all of them (number of
categories − 1) every frame must pick its object among all categories in every step. Deviation from NegCLIP (one
hard negative per pair): on 2 CPU cores the step budget is small, and one swap per pair gives the image tower
1/11 of the object signal per step.

Metric: frame → caption retrieval. The middle frame of each clip ranks ``n_candidates`` captions: its own and
``n_candidates − 1`` distinct other caption texts of the same split, drawn with a fixed seed. Checkpoints are
selected on 1 − top-1 of the validation split (``selection="retrieval"``) or on 1 − the mean of top-1 and the
category-swap accuracy of the validation split (``selection="retrieval+swap"``, for a CLIP meant to see objects:
retrieval alone peaks before the object test does). The reported numbers (top-1, top-5, chance) come from the test
split, with the category-swap accuracy: the middle frame's best of its caption with each of the categories put in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from pipelines.data.twin.stimuli import swap_category
from pipelines.features import demo_tier
from pipelines.features.backbones import ImageTextEncoder, load_backbone, to_tensor
from pipelines.models.io import meta_matches
from pipelines.training.backbones.data import BackboneData
from pipelines.training.loop import LoopConfig, checkpoint_step, train

VAL_CANDIDATES = 100  # captions each validation frame ranks (fewer if the split has fewer distinct captions)
SELECTIONS = ("retrieval", "retrieval+swap")  # validation scores a checkpoint can be selected on
MAX_LOGIT_SCALE = float(np.log(100.0))  # open_clip's clamp of the learnable temperature
ENCODE_BATCH = 256  # frames per encode_image call in evaluation


def _normalised(frames: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames (n, height, width, 3) → CLIP input (n, 3, image_size, image_size), as ImageTextEncoder does."""
    x = to_tensor(frames, device)
    x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(demo_tier.OPENAI_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(demo_tier.OPENAI_STD, device=x.device)[:, None, None]
    return (x.clamp(0, 1) - mean) / std


def caption_batches(
    frames: np.ndarray,
    captions: np.ndarray,
    config: demo_tier.DemoClipConfig,
    batch_size: int,
    categories: np.ndarray | None = None,
    vocabulary: tuple[str, ...] = (),
    negatives_per_pair: int = 1,
) -> Callable[[np.random.Generator], tuple[torch.Tensor, ...]]:
    """A batch sampler of (frame, caption) pairs with no caption text twice in a batch.

    Parameters
    ----------
    frames : array of shape (n_clips, n_frames, height, width, 3), uint8
    captions : array of shape (n_clips,), str
    config : DemoClipConfig
        Image size and context length of the model.
    batch_size : int
        Pairs per batch; at most the number of distinct caption texts.
    categories : array of shape (n_clips,), int, optional
        Each clip's object category (index into ``vocabulary``): adds hard negatives to each pair, the caption with
        other categories drawn at random without replacement, among those whose caption is not another pair's of
        the batch.
    vocabulary : tuple of str
        Category names (at least 2 when ``categories`` is given).
    negatives_per_pair : int
        Hard negatives per pair, 1 to ``len(vocabulary) − 1``. Where the batch's own captions leave fewer allowed
        swaps, allowed ones are repeated (a repeated negative weighs twice; a false one would be wrong).

    Returns
    -------
    callable
        rng → (images, tokens) or, with ``categories``, (images, tokens, negatives): tensors of shape (batch_size,
        3, image_size, image_size), float32, normalised with the OpenAI mean and std, (batch_size, context_length),
        int64, and (batch_size · negatives_per_pair, context_length), int64, pair by pair.
    """
    if categories is not None and len(vocabulary) < 2:
        raise ValueError(f"vocabulary: expected at least 2 category names for hard negatives, got {list(vocabulary)}.")
    if categories is not None:
        _check_negatives_per_pair(negatives_per_pair, vocabulary)
    text_ids = np.unique(captions, return_inverse=True)[1]
    tokenizer = demo_tier.clip_tokenizer(config)

    def sample(rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        order = rng.permutation(len(captions))
        _, first = np.unique(text_ids[order], return_index=True)  # first clip of each caption text in this order
        clips = order[np.sort(first)[:batch_size]]
        frame = rng.integers(frames.shape[1], size=len(clips))
        batch = (_normalised(frames[clips, frame], config.image_size), tokenizer(captions[clips].tolist()))
        if categories is None:
            return batch
        in_batch, negatives = set(captions[clips].tolist()), []
        for clip in clips:  # another category; never a caption of the batch (a false negative for that clip)
            own = int(categories[clip])
            options = [
                swap_category(captions[clip], vocabulary[own], name) for k, name in enumerate(vocabulary) if k != own
            ]
            allowed = [text for text in options if text not in in_batch] or options
            picked = rng.permutation(len(allowed))[:negatives_per_pair]
            picked = np.resize(picked, negatives_per_pair)  # repeats only when fewer swaps are allowed
            negatives.extend(allowed[k] for k in picked)
        return (*batch, tokenizer(negatives))

    return sample


def _check_negatives_per_pair(negatives_per_pair: int, vocabulary: tuple[str, ...]) -> None:
    if not 1 <= negatives_per_pair <= len(vocabulary) - 1:
        raise ValueError(
            f"negatives_per_pair: expected 1 to {len(vocabulary) - 1} (the other categories), got {negatives_per_pair}."
        )


def clip_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """open_clip's ClipLoss of an open_clip CLIP on (images, tokens); clamps the temperature first.

    With (images, tokens, negatives) each image ranks the batch's captions *and* all the batch's hard negatives (the
    image → text cross-entropy has (1 + negatives per pair) × batch columns), while each caption still ranks the
    batch's images (NegCLIP).
    Without negatives this is exactly open_clip's ClipLoss.
    """
    with torch.no_grad():  # open_clip clamps after each optimiser step; before the next forward is the same
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    device = model.logit_scale.device
    images, tokens, *negatives = (t.to(device) for t in batch)
    image_features = model.encode_image(images, normalize=True)
    if not negatives:
        text_features = model.encode_text(tokens, normalize=True)
        return ClipLoss()(image_features, text_features, model.logit_scale.exp())
    texts = model.encode_text(torch.cat([tokens, negatives[0]]), normalize=True)
    scale, labels = model.logit_scale.exp(), torch.arange(len(images), device=device)
    per_image = scale * image_features @ texts.T
    per_text = scale * texts[: len(images)] @ image_features.T
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))


def draw_candidates(captions: np.ndarray, n_candidates: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each clip, its own caption and ``n_candidates − 1`` other, distinct caption texts drawn at random.

    Parameters
    ----------
    captions : array of shape (n_clips,), str
    n_candidates : int
        Captions each clip ranks, its own included; from 2 to the number of distinct caption texts.
    rng : numpy Generator

    Returns
    -------
    texts : array of shape (n_texts,), str
        The distinct caption texts, sorted.
    candidates : array of shape (n_clips, n_candidates), int
        Indices into ``texts``; column 0 is the clip's own caption, the others differ from it and from each other.

    Raises
    ------
    ValueError
        If ``n_candidates`` is below 2 or above the number of distinct caption texts.
    """
    texts, own = np.unique(np.asarray(captions, dtype=str), return_inverse=True)
    if not 2 <= n_candidates <= len(texts):
        raise ValueError(
            f"n_candidates: expected 2 to {len(texts)} (the number of distinct captions among {len(captions)} "
            f"clips), got {n_candidates}. Lower n_candidates."
        )
    others = np.stack([rng.choice(len(texts) - 1, n_candidates - 1, replace=False) for _ in own])
    others += others >= own[:, None]  # skip each clip's own text: indices 0..n_texts-2 → all texts but own
    return texts, np.concatenate([own[:, None], others], axis=1)


def middle_frame_embeddings(encoder: ImageTextEncoder, frames: np.ndarray) -> np.ndarray:
    """Image embeddings of each clip's middle frame (index n_frames // 2) of (n_clips, n_frames, H, W, 3) frames."""
    middle = frames[:, frames.shape[1] // 2]
    return np.concatenate(
        [encoder.encode_image(middle[i : i + ENCODE_BATCH]) for i in range(0, len(middle), ENCODE_BATCH)]
    )


def retrieval_accuracy(
    encoder: ImageTextEncoder,
    frames: np.ndarray,
    captions: np.ndarray,
    n_candidates: int,
    seed: int = 0,
    *,
    images: np.ndarray | None = None,
) -> dict[str, float]:
    """Frame → caption retrieval: each clip's middle frame ranks its own caption among ``n_candidates``.

    Parameters
    ----------
    encoder : ImageTextEncoder
    frames : array of shape (n_clips, n_frames, height, width, 3), uint8
        The middle frame (index n_frames // 2) of each clip is the query.
    captions : array of shape (n_clips,), str
    n_candidates : int
        See :func:`draw_candidates`.
    seed : int
        Seeds the drawing of candidates.
    images : array of shape (n_clips, embed_dim), optional
        ``middle_frame_embeddings(encoder, frames)``, when the caller already has them.

    Returns
    -------
    dict
        ``top1`` and ``top5``: fractions of clips whose own caption ranks first / in the first five (ties count
        against it).
    """
    texts, candidates = draw_candidates(captions, n_candidates, np.random.default_rng(seed))
    images = middle_frame_embeddings(encoder, frames) if images is None else images
    similarity = np.take_along_axis(images @ encoder.encode_text(texts.tolist()).T, candidates, axis=1)
    rank = (similarity[:, 1:] >= similarity[:, :1]).sum(axis=1)
    return {"top1": float(np.mean(rank == 0)), "top5": float(np.mean(rank < 5))}


def category_swap_accuracy(
    encoder: ImageTextEncoder,
    frames: np.ndarray,
    captions: np.ndarray,
    categories: np.ndarray,
    vocabulary: tuple,
    *,
    images: np.ndarray | None = None,
) -> float:
    """How often a clip's middle frame prefers its own caption to the same caption with each other category.

    Every clip ranks ``len(vocabulary)`` captions that differ only in the object (:func:`swap_category`), so only
    the object's shape can decide; chance is ``1 / len(vocabulary)``. Ties count against the own caption.

    Parameters
    ----------
    frames : array of shape (n_clips, n_frames, height, width, 3), uint8
    captions : array of shape (n_clips,), str
    categories : array of shape (n_clips,), int
        Index of each clip's category in ``vocabulary``.
    vocabulary : tuple of str
    images : array of shape (n_clips, embed_dim), optional
        ``middle_frame_embeddings(encoder, frames)``, when the caller already has them.
    """
    images = middle_frame_embeddings(encoder, frames) if images is None else images
    texts = [caption if k == own else swap_category(caption, vocabulary[own], name)
             for caption, own in zip(captions, categories, strict=True) for k, name in enumerate(vocabulary)]  # fmt: skip
    chunks = [encoder.encode_text(texts[i : i + ENCODE_BATCH]) for i in range(0, len(texts), ENCODE_BATCH)]
    embedded = np.concatenate(chunks)
    scores = np.einsum("nkd,nd->nk", embedded.reshape(len(captions), len(vocabulary), -1), images)
    own = scores[np.arange(len(captions)), np.asarray(categories)]
    return float(np.mean((scores >= own[:, None]).sum(axis=1) == 1))


def train_clip(
    data: BackboneData,
    arch: demo_tier.DemoBackbonesConfig,
    loop: LoopConfig,
    backbones_dir: str | Path,
    workdir: str | Path,
    device: str = "cpu",
    hard_negatives: bool = False,
    corpus_runs: int = 0,
    negatives_per_pair: int = 1,
    selection: str = "retrieval",
) -> dict:
    """Train the demo CLIP on training (frame, caption) pairs, select on validation retrieval, save it.

    Parameters
    ----------
    data : BackboneData
        Frames of shape (n_clips, n_frames, height, width, 3) and captions of shape (n_clips,) per split.
    arch : DemoBackbonesConfig
        Its ``clip`` section is the architecture.
    loop : LoopConfig
        Optimisation settings; ``batch_size`` pairs per step.
    backbones_dir : str or Path
        The model is saved to ``backbones_dir/clip`` (what ``load_backbone("clip", "demo", backbones_dir)`` reads),
        with the returned fields but ``n_params`` and ``history`` in its ``meta.json``.
    workdir : str or Path
        This role's checkpoint folder; an interrupted run there is resumed. A finished run is not repeated: the call
        returns at once and leaves ``backbones_dir/clip`` as it is if it already holds that run's weights (so its
        ``meta.json`` keeps the training time).
    device : str
    hard_negatives : bool
        Add each caption with its category swapped as a negative (module docstring).
    corpus_runs : int
        Also train on this many simulated movies no subject saw (:meth:`BackboneData.corpus`); validation and test
        stay the subject's.
    negatives_per_pair : int
        Category swaps per pair with ``hard_negatives`` (:func:`caption_batches`); ignored without them.
    selection : str
        One of :data:`SELECTIONS`: the validation score checkpoints are selected on (module docstring).

    Returns
    -------
    dict
        ``data_key``, ``steps``, ``start_step`` (where this call began: ``steps`` if it only reloaded a finished
        run), ``hard_negatives``, ``corpus_runs``, ``negatives_per_pair``, ``selection``, ``n_train_clips``,
        ``best_step``, ``best_score`` (1 − the selection's validation score), ``best_val_top1``, ``best_val_swap``
        (None when the selection does not measure it), ``seconds`` (this call), ``n_params`` and ``history`` (the
        loop's validation records).

    Raises
    ------
    ValueError
        If a split lacks frames, ``loop.batch_size`` is below 2 or above the number of distinct training captions,
        the validation split has fewer than 2 distinct captions, ``selection`` is unknown or
        ``negatives_per_pair`` is out of range.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection: expected one of {list(SELECTIONS)}, got {selection!r}.")
    if hard_negatives:  # before the corpus is rendered
        _check_negatives_per_pair(negatives_per_pair, data.categories)
    start = time.time()
    train_frames, val_frames = data.frames("train"), data.frames("val")
    train_captions, val_captions = data.labels["train"]["caption"], data.labels["val"]["caption"]
    train_categories = data.labels["train"]["category_id"]
    if corpus_runs:
        corpus = data.corpus(corpus_runs)
        train_frames = np.concatenate([train_frames, corpus["frames"]])
        train_captions = np.concatenate([train_captions, corpus["caption"]])
        train_categories = np.concatenate([train_categories, corpus["category_id"]])
    n_texts = len(np.unique(train_captions))
    if not 2 <= loop.batch_size <= n_texts:
        raise ValueError(
            f"loop.batch_size: expected 2 to {n_texts} (distinct training captions; a batch holds each at most "
            f"once), got {loop.batch_size}. Lower batch_size."
        )
    n_val = min(VAL_CANDIDATES, len(np.unique(val_captions)))
    if n_val < 2:
        raise ValueError(
            f"The validation split has {n_val} distinct captions among {len(val_captions)} clips; expected at "
            "least 2 to select checkpoints by retrieval. Prepare the data with a validation segment."
        )

    torch.manual_seed(loop.seed)
    model = demo_tier.build_clip(arch.clip).to(device)
    tokenizer = demo_tier.clip_tokenizer(arch.clip)

    def measure(model: torch.nn.Module) -> tuple[float, float | None]:  # validation top-1 and swap accuracy
        encoder = ImageTextEncoder(
            model, tokenizer, arch.clip.image_size, demo_tier.OPENAI_MEAN, demo_tier.OPENAI_STD, "training"
        )
        images = middle_frame_embeddings(encoder, val_frames)
        top1 = retrieval_accuracy(encoder, val_frames, val_captions, n_val, images=images)["top1"]
        if selection == "retrieval":
            return top1, None
        val_categories = data.labels["val"]["category_id"]
        return top1, category_swap_accuracy(encoder, val_frames, val_captions, val_categories, data.categories,
                                            images=images)  # fmt: skip

    def validate(model: torch.nn.Module) -> float:  # the wrapper load_backbone returns, around the training model
        top1, swap = measure(model)
        return 1.0 - (top1 if swap is None else 0.5 * (top1 + swap))

    categories = train_categories if hard_negatives else None
    sample_batch = caption_batches(train_frames, train_captions, arch.clip, loop.batch_size, categories,
                                   data.categories, negatives_per_pair)  # fmt: skip
    start_step = checkpoint_step(Path(workdir))
    model, result = train("clip", model, sample_batch, clip_loss, validate, loop, workdir)
    with torch.no_grad():
        best_top1, best_swap = measure(model)  # the selected weights, which train() returns

    meta = {"data_key": data.dataset.key, "steps": loop.steps, "start_step": start_step,
            "hard_negatives": hard_negatives, "corpus_runs": corpus_runs,
            "negatives_per_pair": negatives_per_pair if hard_negatives else 0, "selection": selection,
            "n_train_clips": len(train_captions), "best_step": result.best_step, "best_score": result.best_score,
            "best_val_top1": best_top1, "best_val_swap": best_swap, "val_candidates": n_val,
            "seconds": time.time() - start}  # fmt: skip
    target = Path(backbones_dir) / "clip"
    if not (start_step == loop.steps and meta_matches(target, meta)):
        demo_tier.save_clip(model, arch.clip, target, meta)
    return {**meta, "n_params": sum(p.numel() for p in model.parameters()), "history": result.history}


def evaluate_clip(
    data: BackboneData, backbones_dir: str | Path, device: str = "cpu", n_candidates: int = 100, seed: int = 0
) -> dict:
    """Test-split frame → caption retrieval of the saved demo CLIP.

    Parameters
    ----------
    data : BackboneData
    backbones_dir : str or Path
        Holds ``clip/`` (loaded with ``load_backbone("clip", "demo", backbones_dir)``).
    device : str
    n_candidates : int
        Captions each test clip's middle frame ranks: its own and ``n_candidates − 1`` other caption texts.
    seed : int
        Seeds the drawing of candidates.

    Returns
    -------
    dict
        ``clip_top1``, ``clip_top5`` (fractions of test clips), ``clip_chance`` (1 / n_candidates),
        ``clip_n_candidates``, ``clip_n_clips``, ``clip_category_swap`` (:func:`category_swap_accuracy`) and
        ``clip_category_chance``.

    Raises
    ------
    ValueError
        If the test split lacks frames or ``n_candidates`` is below 2 or above its number of distinct captions.
    FileNotFoundError
        If ``backbones_dir/clip`` does not exist.
    """
    frames, captions = data.frames("test"), data.labels["test"]["caption"]
    draw_candidates(captions, n_candidates, np.random.default_rng(seed))  # fail on n_candidates before loading
    encoder = load_backbone("clip", "demo", backbones_dir, device)
    images = middle_frame_embeddings(encoder, frames)
    scores = retrieval_accuracy(encoder, frames, captions, n_candidates, seed, images=images)
    swap = category_swap_accuracy(encoder, frames, captions, data.labels["test"]["category_id"], data.categories,
                                  images=images)  # fmt: skip
    return {"clip_top1": scores["top1"], "clip_top5": scores["top5"], "clip_chance": 1.0 / n_candidates,
            "clip_n_candidates": n_candidates, "clip_n_clips": len(captions), "clip_category_swap": swap,
            "clip_category_chance": 1.0 / len(data.categories)}  # fmt: skip
