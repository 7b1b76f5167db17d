"""The demo CLIP trainer: candidates never repeat the true caption, retrieval is ranked right, the loss falls, the
saved model loads and is evaluated, a finished run is not repeated, and bad settings are explained."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.config import load_config, preset_path
from pipelines.data.twin.stimuli import swap_category
from pipelines.features import demo_tier
from pipelines.features.backbones import load_backbone
from pipelines.training.backbones.clip import (
    caption_batches,
    category_swap_accuracy,
    clip_loss,
    draw_candidates,
    evaluate_clip,
    retrieval_accuracy,
    train_clip,
)
from pipelines.training.backbones.config import BackboneTrainingConfig
from pipelines.training.loop import LoopConfig, train
from tests.features.conftest import TINY

LOOP = load_config(BackboneTrainingConfig, preset_path("backbones", "train_tiny")).clip


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    summary = train_clip(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    return root, summary


def test_candidates_are_distinct_and_never_the_true_text():
    captions = np.array(["a red ball", "a red ball", "a blue car", "a star", "a blue car", "a moon", "a fish"])
    for seed in range(20):
        texts, candidates = draw_candidates(captions, 4, np.random.default_rng(seed))
        assert texts.tolist() == sorted(set(captions)) and candidates.shape == (7, 4)
        assert (texts[candidates[:, 0]] == captions).all()  # column 0: the clip's own caption
        for own, row in zip(captions, texts[candidates], strict=True):
            assert own not in row[1:] and len(set(row)) == 4
    _, every = draw_candidates(captions, 5, np.random.default_rng(0))  # all 5 texts: each exactly once
    assert (np.sort(every, axis=1) == np.arange(5)).all()


@pytest.mark.parametrize("n_candidates", [1, 6])
def test_candidates_out_of_range_are_refused(n_candidates):
    captions = np.array(["a", "a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match=rf"n_candidates: expected 2 to 5 .* among 6 clips\), got {n_candidates}"):
        draw_candidates(captions, n_candidates, np.random.default_rng(0))


class _Lookup:
    """Stand-in encoder: an image's embedding is row (its pixel value) of IMAGES; a text's is TEXTS[text]."""

    IMAGES = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    TEXTS = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.8, 0.0, 0.6]}

    def encode_image(self, frames):
        return self.IMAGES[frames[:, 0, 0, 0]]

    def encode_text(self, captions):
        return np.array([self.TEXTS[c] for c in captions])


def test_retrieval_ranks_the_own_caption_against_every_candidate():
    # Similarities to the texts x, y, z:  image 0: 1.0, 0.0, 0.8   image 1: 0.6, 0.8, 0.48   image 2: 0.0, 0.0, 0.6
    # Clips with captions x, y, z show images 0, 1, 0 in their middle frame (index 2 of 4): x first, y first,
    # z second (behind x). The other frames of clip z show image 2, which would rank z first: they must not count.
    frames = np.zeros((3, 4, 2, 2, 3), np.uint8)
    frames[:, 2, 0, 0, 0] = [0, 1, 0]
    frames[2, [0, 1, 3]] = 2
    captions = np.array(["x", "y", "z"])
    assert retrieval_accuracy(_Lookup(), frames, captions, n_candidates=3) == {"top1": 2 / 3, "top5": 1.0}
    frames[1, 2, 0, 0, 0] = 0  # clip y shows image 0: y last of 3
    assert retrieval_accuracy(_Lookup(), frames, captions, n_candidates=3) == {"top1": 1 / 3, "top5": 1.0}


def test_ties_count_against_the_own_caption():
    frames = np.zeros((2, 1, 1, 1, 3), np.uint8)  # both clips: image 0, similarity 1.0 to "x" and to "x2"
    encoder = _Lookup()
    encoder.TEXTS = {"x": [1.0, 0.0, 0.0], "x2": [1.0, 0.0, 0.0]}
    assert retrieval_accuracy(encoder, frames, np.array(["x", "x2"]), n_candidates=2)["top1"] == 0.0


def test_loss_falls_when_overfitting_one_batch(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = demo_tier.build_clip(TINY.clip)
    sample = caption_batches(tiny_data.split("train").frames, tiny_data.labels["train"]["caption"], TINY.clip, 16)
    images, tokens = sample(np.random.default_rng(0))
    assert images.shape == (16, 3, 32, 32) and tokens.shape == (16, 16)
    losses = []

    def recorded(model, batch):
        loss = clip_loss(model, batch)
        losses.append(float(loss.detach()))
        return loss

    config = LoopConfig(steps=20, batch_size=16, lr=2e-3, warmup=2, eval_every=20)
    train("clip", model, lambda rng: (images, tokens), recorded, lambda m: 0.0, config, tmp_path)
    assert losses[0] > np.log(16)  # random weights: no better than chance over 16 pairs
    assert losses[-1] < 0.5 * losses[0]


def test_batches_never_hold_one_caption_twice(tiny_data):
    captions = tiny_data.labels["train"]["caption"]
    assert len(set(captions)) < len(captions)  # the tiny subject repeats captions
    sample = caption_batches(tiny_data.split("train").frames, captions, TINY.clip, len(set(captions)))
    tokenizer = demo_tier.clip_tokenizer(TINY.clip)
    for seed in range(5):
        _, tokens = sample(np.random.default_rng(seed))
        assert len({tuple(t) for t in tokens.tolist()}) == len(tokens) == len(set(captions))
        assert set(map(tuple, tokens.tolist())) == set(map(tuple, tokenizer(sorted(set(captions))).tolist()))


def test_hard_negatives_swap_only_the_category(tiny_data):
    captions, categories = tiny_data.labels["train"]["caption"], tiny_data.labels["train"]["category_id"]
    tokenizer = demo_tier.clip_tokenizer(TINY.clip)
    sample = caption_batches(tiny_data.split("train").frames, captions, TINY.clip, 8, categories, tiny_data.categories)
    images, tokens, negatives = sample(np.random.default_rng(0))
    assert images.shape[0] == tokens.shape[0] == negatives.shape[0] == 8
    for row, negative in zip(tokens.tolist(), negatives.tolist(), strict=True):
        clip = next(i for i, c in enumerate(captions) if tokenizer([c]).tolist()[0] == row)
        own = tiny_data.categories[categories[clip]]
        others = [swap_category(captions[clip], own, name) for name in tiny_data.categories if name != own]
        assert negative in tokenizer(others).tolist()  # the same caption with another category, never its own
    # two clips whose captions differ only in the object: neither may get the other's caption as its negative
    pair = np.array(["a red ball bouncing upwards in front of grass", "a red star spinning upwards in front of grass"])
    car = tokenizer(["a red car driving upwards in front of grass"]).tolist()[0]
    frames = tiny_data.split("train").frames[:2]
    two = caption_batches(frames, pair, TINY.clip, 2, np.array([0, 1]), ("ball", "star", "car"))
    for seed in range(5):
        _, _, negatives = two(np.random.default_rng(seed))
        assert negatives.tolist() == [car, car]
    with pytest.raises(ValueError, match=r"vocabulary: expected at least 2 category names .* got \['ball'\]"):
        caption_batches(tiny_data.split("train").frames, captions, TINY.clip, 8, categories, ("ball",))


def test_several_negatives_per_pair_are_distinct_swaps_pair_by_pair(tiny_data):
    captions, categories = tiny_data.labels["train"]["caption"], tiny_data.labels["train"]["category_id"]
    tokenizer = demo_tier.clip_tokenizer(TINY.clip)
    frames, vocabulary = tiny_data.split("train").frames, tiny_data.categories
    sample = caption_batches(frames, captions, TINY.clip, 8, categories, vocabulary, negatives_per_pair=3)
    for seed in range(3):
        _, tokens, negatives = sample(np.random.default_rng(seed))
        assert negatives.shape == (8 * 3, tokens.shape[1])
        in_batch = {tuple(row) for row in tokens.tolist()}
        for row, three in zip(tokens.tolist(), negatives.reshape(8, 3, -1).tolist(), strict=True):
            clip = next(i for i, c in enumerate(captions) if tokenizer([c]).tolist()[0] == row)
            own = vocabulary[categories[clip]]
            others = tokenizer([swap_category(captions[clip], own, n) for n in vocabulary if n != own]).tolist()
            assert all(t in others and tuple(t) not in in_batch for t in three)  # swaps of this pair's caption
            assert len({tuple(t) for t in three}) == 3  # drawn without replacement
    # every swap is another pair's caption but one: that one is repeated rather than a false negative drawn
    pair = np.array(["a red ball bouncing upwards in front of grass", "a red star spinning upwards in front of grass"])
    car = tokenizer(["a red car driving upwards in front of grass"]).tolist()[0]
    two = caption_batches(frames[:2], pair, TINY.clip, 2, np.array([0, 1]), ("ball", "star", "car"), 2)
    assert two(np.random.default_rng(0))[2].tolist() == [car] * 4


@pytest.mark.parametrize("count", [0, 3])
def test_negatives_per_pair_out_of_range_are_refused(tiny_data, count, tmp_path):
    frames = tiny_data.split("train").frames[:2]
    with pytest.raises(ValueError, match=rf"negatives_per_pair: expected 1 to 2 \(the other categories\), got {count}"):
        caption_batches(frames, np.array(["a", "b"]), TINY.clip, 2, np.array([0, 1]), ("ball", "star", "car"), count)
    n = len(tiny_data.categories)
    bad = 0 if count == 0 else n
    with pytest.raises(ValueError, match=rf"negatives_per_pair: expected 1 to {n - 1} .*, got {bad}"):
        train_clip(tiny_data, TINY, LOOP, tmp_path / "b", tmp_path / "w", hard_negatives=True, negatives_per_pair=bad)
    assert not (tmp_path / "w").exists()  # refused before any work


def test_an_unknown_selection_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"selection: expected one of \['retrieval', 'retrieval\+swap'\], got 'swap'"):
        train_clip(tiny_data, TINY, LOOP, tmp_path / "b", tmp_path / "w", selection="swap")
    assert not (tmp_path / "w").exists()


def test_the_loss_with_negatives_matches_its_definition():
    torch.manual_seed(0)
    model = demo_tier.build_clip(TINY.clip).eval()
    images = torch.randn(4, 3, 32, 32)
    tokens, negatives = torch.randint(1, 400, (4, 16)), torch.randint(1, 400, (4, 16))
    with torch.no_grad():
        loss = float(clip_loss(model, (images, tokens, negatives)))
        i = model.encode_image(images, normalize=True).double().numpy()
        t = model.encode_text(torch.cat([tokens, negatives]), normalize=True).double().numpy()
        scale = float(model.logit_scale.exp())
        plain = float(clip_loss(model, (images, tokens)))

    def cross_entropy(logits):  # rows = queries, the diagonal is the positive
        logits = logits - logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits)))

    expected = 0.5 * (cross_entropy(scale * i @ t.T) + cross_entropy(scale * t[:4] @ i.T))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert plain == pytest.approx(
        0.5 * (cross_entropy(scale * i @ t[:4].T) + cross_entropy(scale * t[:4] @ i.T)), rel=1e-5
    )
    assert loss > plain  # the negatives only add competitors


class _ByKey:
    """Stand-in encoder over a dict: an image's embedding is vectors[its pixel value], a text's vectors[text]."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode_image(self, frames):
        return np.stack([self.vectors[int(f[0, 0, 0])] for f in frames])

    def encode_text(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def test_category_swap_accuracy_counts_the_own_caption_first_and_ties_against_it():
    vocabulary = ("ball", "star", "car")
    captions = np.array(
        ["a red ball bouncing upwards in front of grass", "a red star spinning upwards in front of grass"]
    )
    texts = [swap_category(captions[0], "ball", k) if k != "ball" else captions[0] for k in vocabulary]
    rng = np.random.default_rng(0)
    vectors = {t: v / np.linalg.norm(v) for t, v in zip(texts, rng.standard_normal((3, 4)), strict=True)}  # unit
    vectors[0], vectors[1] = vectors[captions[0]], vectors[captions[0]]  # both frames look like the red ball
    frames = np.zeros((2, 3, 2, 2, 3), np.uint8)
    frames[1, 1, 0, 0, 0] = 1  # the middle frame (index 1) picks the image vector
    encoder = _ByKey(vectors)
    assert category_swap_accuracy(encoder, frames, captions, np.array([0, 1]), vocabulary) == 0.5  # star clip wrong
    vectors[captions[1]] = vectors[captions[0]]  # a tie between the ball and star captions: both clips wrong
    assert category_swap_accuracy(encoder, frames, captions, np.array([0, 1]), vocabulary) == 0.0


def test_train_save_load_evaluate(trained, tiny_data):
    root, summary = trained
    assert summary["steps"] == LOOP.steps and summary["start_step"] == 0
    assert summary["best_step"] in (3, 6) and 0 <= summary["best_score"] <= 1
    assert summary["n_params"] == sum(p.numel() for p in demo_tier.build_clip(TINY.clip).parameters())
    assert [h["step"] for h in summary["history"]] == [3, 6]
    meta = json.loads((root / "backbones" / "clip" / "meta.json").read_text())
    assert meta["data_key"] == tiny_data.dataset.key and meta["role"] == "clip"
    assert {"steps", "best_step", "best_score", "seconds"} <= set(meta)
    assert meta["selection"] == "retrieval" and meta["negatives_per_pair"] == 0 and meta["best_val_swap"] is None
    encoder = load_backbone("clip", "demo", root / "backbones")
    n_val = len(set(tiny_data.labels["val"]["caption"]))
    val = retrieval_accuracy(encoder, tiny_data.split("val").frames, tiny_data.labels["val"]["caption"], n_val)
    assert 1 - val["top1"] == pytest.approx(summary["best_score"])  # the saved model is the selected one

    scores = evaluate_clip(tiny_data, root / "backbones", n_candidates=8)
    assert set(scores) == {"clip_top1", "clip_top5", "clip_chance", "clip_n_candidates", "clip_n_clips",
                           "clip_category_swap", "clip_category_chance"}  # fmt: skip
    assert 0 <= scores["clip_category_swap"] <= 1 and scores["clip_category_chance"] == 1 / len(tiny_data.categories)
    assert 0 <= scores["clip_top1"] <= scores["clip_top5"] <= 1
    assert scores["clip_chance"] == 1 / 8 and scores["clip_n_clips"] == len(tiny_data.split("test").frames)
    assert evaluate_clip(tiny_data, root / "backbones", n_candidates=8) == scores  # seeded


def test_training_with_hard_negatives_and_a_corpus_records_them(tiny_data, tmp_path):
    summary = train_clip(tiny_data, TINY, LOOP, tmp_path / "b", tmp_path / "w", hard_negatives=True, corpus_runs=1)
    assert summary["hard_negatives"] is True and summary["steps"] == LOOP.steps and summary["corpus_runs"] == 1
    n_movie = len(tiny_data.corpus(1)["caption"])  # one movie of the subject's length, from the cache now
    assert n_movie == 16 and summary["n_train_clips"] == len(tiny_data.labels["train"]["caption"]) + n_movie
    meta = json.loads((tmp_path / "b" / "clip" / "meta.json").read_text())
    assert meta["hard_negatives"] is True and meta["corpus_runs"] == 1
    assert len(list(tiny_data.cache_dir.glob("corpus-*"))) == 1


def test_selection_on_retrieval_and_swap_scores_the_saved_weights(tiny_data, tmp_path):
    summary = train_clip(tiny_data, TINY, LOOP, tmp_path / "b", tmp_path / "w", hard_negatives=True,
                         negatives_per_pair=2, selection="retrieval+swap")  # fmt: skip
    assert summary["selection"] == "retrieval+swap" and summary["negatives_per_pair"] == 2
    encoder = load_backbone("clip", "demo", tmp_path / "b")
    val, labels = tiny_data.split("val").frames, tiny_data.labels["val"]
    top1 = retrieval_accuracy(encoder, val, labels["caption"], len(set(labels["caption"])))["top1"]
    swap = category_swap_accuracy(encoder, val, labels["caption"], labels["category_id"], tiny_data.categories)
    assert (summary["best_val_top1"], summary["best_val_swap"]) == pytest.approx((top1, swap))
    assert summary["best_score"] == pytest.approx(1 - (top1 + swap) / 2)
    assert min(h["score"] for h in summary["history"]) == pytest.approx(summary["best_score"])


def test_a_finished_run_is_not_repeated(trained, tiny_data):
    root, first = trained
    folder = root / "backbones" / "clip"
    before = {name: (folder / name).read_bytes() for name in ("model.safetensors", "meta.json")}
    again = train_clip(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    assert again["start_step"] == LOOP.steps  # resumed at the end: no step was taken
    assert again["best_step"] == first["best_step"] and again["best_score"] == first["best_score"]
    assert {name: (folder / name).read_bytes() for name in before} == before  # meta keeps the training time
    shutil.rmtree(folder)  # a finished run whose saved folder is gone writes it again
    train_clip(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    assert (folder / "model.safetensors").read_bytes() == before["model.safetensors"]


def test_evaluation_errors(trained, tiny_data, tmp_path):
    root, _ = trained
    n_texts = len(set(tiny_data.labels["test"]["caption"]))
    with pytest.raises(ValueError, match=rf"n_candidates: expected 2 to {n_texts} .*got 100\. Lower n_candidates"):
        evaluate_clip(tiny_data, root / "backbones")
    with pytest.raises(FileNotFoundError, match="clip does not exist"):
        evaluate_clip(tiny_data, tmp_path, n_candidates=8)


def _with_split(data, name, **changes):
    splits = {**data.dataset.splits, name: replace(data.dataset.splits[name], **changes)}
    return replace(data, dataset=replace(data.dataset, splits=splits))


def test_training_errors(tiny_data, tmp_path):
    n_texts = len(set(tiny_data.labels["train"]["caption"]))
    with pytest.raises(ValueError, match=rf"loop.batch_size: expected 2 to {n_texts} .*got 100\. Lower batch_size"):
        train_clip(tiny_data, TINY, replace(LOOP, batch_size=100), tmp_path / "b", tmp_path / "w")
    n_val = len(tiny_data.labels["val"]["caption"])
    labels = {**tiny_data.labels, "val": {**tiny_data.labels["val"], "caption": np.full(n_val, "a red ball")}}
    with pytest.raises(ValueError, match=f"validation split has 1 distinct captions among {n_val} clips; expected"):
        train_clip(replace(tiny_data, labels=labels), TINY, LOOP, tmp_path / "b", tmp_path / "w")
    with pytest.raises(ValueError, match=r"data.split\('val'\).frames: expected a uint8 array .* got None"):
        train_clip(_with_split(tiny_data, "val", frames=None), TINY, LOOP, tmp_path / "b", tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before any work
