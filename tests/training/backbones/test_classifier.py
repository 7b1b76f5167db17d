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
    augment,
    classifier_loss,
    evaluate_classifier,
    frame_batches,
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
