"""The demo renderer trainer: denoising loss falls; samples are classified; errors are explained."""

import json
import shutil

import numpy as np
import pytest

from pipelines.features.backbones import load_backbone
from pipelines.models.classifier import FrameClassifier, FrameClassifierConfig
from pipelines.training.backbones.unet import evaluate_unet, sample_images, train_unet
from pipelines.training.loop import LoopConfig
from tests.features.conftest import TINY

LOOP = LoopConfig(steps=30, batch_size=8, lr=2e-3, warmup=2, eval_every=10)


@pytest.fixture(scope="module")
def trained(tiny_backbones, tiny_data, tmp_path_factory):
    source, _ = tiny_backbones
    root = tmp_path_factory.mktemp("renderer")
    for role in ("clip", "vae"):
        shutil.copytree(source / role, root / role)
    FrameClassifier(FrameClassifierConfig(labels=tiny_data.categories, image_size=32, channels=(8,))).save_pretrained(
        root / "frame_classifier"
    )
    summary = train_unet(tiny_data, TINY, LOOP, root, root / "work")
    return root, summary


def test_denoising_loss_falls(trained):
    root, summary = trained
    history = json.loads((root / "work" / "state.json").read_text())["history"]
    assert history[-1]["score"] < history[0]["score"]
    assert summary["best_val_loss"] == pytest.approx(min(h["score"] for h in history))
    assert load_backbone("unet", "demo", root).unet.config.cross_attention_dim == TINY.clip.text_width


def test_sampling_is_seeded(trained):
    root, _ = trained
    renderer, vae = load_backbone("unet", "demo", root), load_backbone("vae", "demo", root)
    a = sample_images(renderer, vae, ["a red ball", "a blue car"], num_inference_steps=3, seed=1)
    b = sample_images(renderer, vae, ["a red ball", "a blue car"], num_inference_steps=3, seed=1)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_evaluate(trained, tiny_data):
    root, _ = trained
    scores = evaluate_unet(tiny_data, root, n_samples=4, num_inference_steps=2, batch_size=2)
    assert scores["renderer_chance"] == pytest.approx(1 / len(tiny_data.categories))
    assert 0 <= scores["renderer_category_acc"] <= 1 and scores["renderer_n_samples"] == 4
    with pytest.raises(ValueError, match=r"n_samples: expected 1..28 \(test clips\), got 500"):
        evaluate_unet(tiny_data, root, n_samples=500)
