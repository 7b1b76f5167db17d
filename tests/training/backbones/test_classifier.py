"""The demo frame-classifier trainer: augmentation keeps the image, the loss falls, the saved model loads and is
evaluated per frame and per clip, a finished run is not repeated, and bad inputs are explained."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.config import load_config, preset_path
from pipelines.features.backbones import load_backbone
from pipelines.models.classifier import FrameClassifier
from pipelines.training.backbones.classifier import (
    BRIGHTNESS,
    MIN_SATURATION,
    augment,
    classifier_loss,
    evaluate_classifier,
    frame_batches,
    gaussian_blur,
    train_frame_classifier,
)
from pipelines.training.backbones.config import BackboneTrainingConfig
from pipelines.training.loop import LoopConfig, train
from tests.features.conftest import TINY

LOOP = load_config(BackboneTrainingConfig, preset_path("backbones", "train_tiny")).frame_classifier
KEYS = {
    "frame_classifier_acc",
    "video_classifier_acc",
    "classifier_chance",
    "classifier_n_frames",
    "classifier_n_clips",
}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    summary = train_frame_classifier(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    return root, summary


def test_augmentation_only_crops_flips_and_scales_brightness():
    flat = np.full((64, 40, 48, 3), 100, np.uint8)
    out = augment(flat, 32, np.random.default_rng(0))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    gain = out / (100 / 255)  # a flat image stays flat: only the brightness factor changes it
    assert torch.allclose(gain, gain[:, :1, :1, :1].expand_as(gain), atol=1e-5)
    assert 1 - BRIGHTNESS - 1e-5 <= gain.min() and gain.max() <= 1 + BRIGHTNESS + 1e-5
    assert gain.std() > 0.02  # the factor does vary

    halves = np.zeros((256, 32, 32, 3), np.uint8)
    halves[:, :, :16] = 255  # left half white
    out = augment(halves, 32, np.random.default_rng(1))
    left, right = out[..., :8].mean(dim=(1, 2, 3)), out[..., -8:].mean(dim=(1, 2, 3))
    flipped = (right > left).float().mean()
    assert 0.35 < flipped < 0.65  # mirrored about half the time
    assert ((left > 0.8) | (right > 0.8)).all()  # crops of >= 80 % of the area keep the outer quarter
    torch.testing.assert_close(augment(halves, 32, np.random.default_rng(1)), out)  # a function of the rng


def test_colour_augmentation_permutes_the_channels_and_lowers_the_saturation():
    red = np.zeros((300, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    plain = augment(red, 16, np.random.default_rng(2))
    out = augment(red, 16, np.random.default_rng(2), colour=True)
    torch.testing.assert_close(augment(red, 16, np.random.default_rng(2), colour=True), out)  # a function of the rng
    pixel, gain = out[:, :, 8, 8], plain[:, 0, 8, 8]  # flat images: one pixel says it all
    strong = pixel.argmax(dim=1)
    assert set(strong.tolist()) == {0, 1, 2}  # red became red, green or blue
    assert 0.2 < (strong == 0).float().mean() < 0.47
    weak = pixel.sort(dim=1).values[:, :2]  # the other two channels: equal, the grey mixed in
    torch.testing.assert_close(weak[:, 0], weak[:, 1])
    saturation = 1 - 3 * weak[:, 0] / gain  # grey = gain / 3, mixed in with weight 1 - saturation
    assert MIN_SATURATION - 1e-4 <= saturation.min() and saturation.max() <= 1 + 1e-4
    assert saturation.std() > 0.1
    torch.testing.assert_close(pixel.sum(dim=1), gain)  # brightness is kept


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((2, 3, 12, 10)).astype(np.float32))
    out = gaussian_blur(images, np.array([1.0, 0.0]))  # radius 3: scipy with truncate=3
    expected = ndimage.gaussian_filter(images[0].numpy().astype(np.float64), (0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    torch.testing.assert_close(out[1], images[1])  # sigma 0: unchanged
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, np.array([2.0])), flat)  # reflected borders keep it flat


def test_blur_augmentation_blurs_about_half_the_frames():
    stripes = np.zeros((400, 32, 32, 3), np.uint8)
    stripes[:, :, ::2] = 255  # one-pixel vertical stripes; crops and flips keep some of them
    sharp = augment(stripes, 32, np.random.default_rng(3))
    out = augment(stripes, 32, np.random.default_rng(3), blur=2.0)
    contrast = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(1, 2, 3))
    before = (sharp[..., 1:] - sharp[..., :-1]).abs().mean(dim=(1, 2, 3))
    kept = (out == sharp).all(dim=3).all(dim=2).all(dim=1)  # the frames the coin left sharp are untouched
    assert 0.4 < kept.float().mean() < 0.6
    assert (contrast[~kept] <= before[~kept] + 1e-5).all()  # blurring never sharpens
    assert (contrast[~kept] < 0.8 * before[~kept]).float().mean() > 0.7  # most sigmas blur visibly


def test_loss_falls_when_overfitting_one_batch(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = FrameClassifier(replace(TINY.frame_classifier, labels=tiny_data.categories))
    sample = frame_batches(tiny_data.split("train").frames, tiny_data.labels["train"]["category_id"], 32, 16)
    images, labels = sample(np.random.default_rng(0))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16,) and labels.dtype == torch.int64
    losses = []

    def recorded(model, batch):
        loss = classifier_loss(model, batch)
        losses.append(float(loss.detach()))
        return loss

    config = LoopConfig(steps=20, batch_size=16, lr=2e-2, warmup=2, eval_every=20)
    train("classifier", model, lambda rng: (images, labels), recorded, lambda m: 0.0, config, tmp_path)
    assert losses[0] > 0.5 * np.log(12)  # random weights over 12 categories
    assert losses[-1] < 0.5 * losses[0]


def test_train_save_load_evaluate(trained, tiny_data):
    root, summary = trained
    assert summary["steps"] == LOOP.steps and summary["start_step"] == 0 and summary["best_step"] in (3, 6)
    assert 0 <= summary["best_score"] <= 1 and summary["best_val_acc"] == 1 - summary["best_score"]
    assert summary["n_params"] > 0 and [h["step"] for h in summary["history"]] == [3, 6]
    meta = json.loads((root / "backbones" / "frame_classifier" / "meta.json").read_text())
    assert meta["data_key"] == tiny_data.dataset.key and meta["role"] == "frame_classifier"
    assert {"steps", "best_step", "best_score", "seconds"} <= set(meta)

    frame = load_backbone("frame_classifier", "demo", root / "backbones")
    assert frame.labels == tiny_data.categories
    val = tiny_data.split("val").frames
    predicted = frame.logits(val.reshape(-1, *val.shape[2:])).argmax(1)
    error = np.mean(predicted != np.repeat(tiny_data.labels["val"]["category_id"], val.shape[1]))
    assert error == pytest.approx(summary["best_score"])  # the saved model is the selected one

    scores = evaluate_classifier(tiny_data, root / "backbones")
    assert set(scores) == KEYS and scores["classifier_chance"] == 1 / 12
    assert 0 <= scores["frame_classifier_acc"] <= 1 and 0 <= scores["video_classifier_acc"] <= 1
    test = tiny_data.split("test").frames
    assert scores["classifier_n_clips"] == len(test) and scores["classifier_n_frames"] == len(test) * test.shape[1]
    video = load_backbone("video_classifier", "demo", root / "backbones").logits(test).argmax(1)
    assert scores["video_classifier_acc"] == pytest.approx(np.mean(video == tiny_data.labels["test"]["category_id"]))


def test_a_finished_run_is_not_repeated(trained, tiny_data):
    root, first = trained
    folder = root / "backbones" / "frame_classifier"
    before = {name: (folder / name).read_bytes() for name in ("model.safetensors", "meta.json")}
    again = train_frame_classifier(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    assert again["start_step"] == LOOP.steps  # resumed at the end: no step was taken
    assert again["best_step"] == first["best_step"] and again["best_score"] == first["best_score"]
    assert {name: (folder / name).read_bytes() for name in before} == before  # meta keeps the training time
    shutil.rmtree(folder)  # a finished run whose saved folder is gone writes it again
    train_frame_classifier(tiny_data, TINY, LOOP, root / "backbones", root / "work")
    assert (folder / "model.safetensors").read_bytes() == before["model.safetensors"]


def test_corpus_and_augmentation_options_are_recorded(tiny_data, tmp_path):
    summary = train_frame_classifier(tiny_data, TINY, LOOP, tmp_path / "b", tmp_path / "w", corpus_runs=1,
                                     colour=True, blur=1.5)  # fmt: skip
    n_subject = len(tiny_data.split("train").frames)
    assert summary["n_train_clips"] > n_subject and summary["steps"] == LOOP.steps
    meta = json.loads((tmp_path / "b" / "frame_classifier" / "meta.json").read_text())
    assert (meta["corpus_runs"], meta["colour"], meta["blur"]) == (1, True, 1.5)
    assert meta["n_train_clips"] == summary["n_train_clips"]


def _with_split(data, name, **changes):
    splits = {**data.dataset.splits, name: replace(data.dataset.splits[name], **changes)}
    return replace(data, dataset=replace(data.dataset, splits=splits))


def test_training_errors(tiny_data, tmp_path):
    args = (TINY, LOOP, tmp_path / "b", tmp_path / "w")
    with pytest.raises(ValueError, match=r"data.split\('train'\).frames: expected a uint8 array .* got None"):
        train_frame_classifier(_with_split(tiny_data, "train", frames=None), *args)
    empty = tiny_data.split("val").frames[:0]
    with pytest.raises(ValueError, match=r"data.split\('val'\) has 0 clips; expected at least 1"):
        train_frame_classifier(_with_split(tiny_data, "val", frames=empty), *args)
    labels = {**tiny_data.labels, "train": {**tiny_data.labels["train"]}}
    labels["train"]["category_id"] = labels["train"]["category_id"] + 12
    with pytest.raises(ValueError, match=r"'category_id'\]: expected values in 0..11 \(12 categories\), got 12"):
        train_frame_classifier(replace(tiny_data, labels=labels), *args)
    with pytest.raises(ValueError, match=r"corpus_runs and blur: expected values >= 0, got -1 and 0.0"):
        train_frame_classifier(tiny_data, *args, corpus_runs=-1)
    with pytest.raises(ValueError, match=r"corpus_runs and blur: expected values >= 0, got 0 and -1.0"):
        train_frame_classifier(tiny_data, *args, blur=-1.0)
    assert not (tmp_path / "w").exists()  # refused before any work


def test_evaluation_errors(trained, tiny_data, tmp_path):
    root, _ = trained
    renamed = replace(tiny_data, categories=tuple(f"class{i}" for i in range(12)))
    with pytest.raises(ValueError, match=r"classifies \['ball', .*expected the data's categories \['class0'"):
        evaluate_classifier(renamed, root / "backbones")
    with pytest.raises(ValueError, match=r"data.split\('test'\).frames: expected a uint8 array .* got float64"):
        evaluate_classifier(_with_split(tiny_data, "test", frames=np.zeros((2, 8, 4, 4, 3))), root / "backbones")
    with pytest.raises(FileNotFoundError, match="frame_classifier does not exist"):
        evaluate_classifier(tiny_data, tmp_path)
