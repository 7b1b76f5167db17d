"""The demo VAE trainer on the tiny subject: validation PSNR rises, the latent scale is set, the folder loads."""

import json

import numpy as np
import pytest

from pipelines.features.backbones import load_backbone
from pipelines.training.backbones.vae import evaluate_vae, psnr, train_vae
from pipelines.training.loop import LoopConfig
from tests.features.conftest import TINY

LOOP = LoopConfig(steps=20, batch_size=8, lr=3e-3, warmup=2, eval_every=10)


def test_psnr_matches_the_definition():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10  # MSE 100 → 10 log10(255² / 100)
    b[1, 0, 0, 0] = 255  # MSE 255² / 48 → 10 log10(48)
    np.testing.assert_allclose(psnr(a, b), [10 * np.log10(255**2 / 100), 10 * np.log10(48)])


def test_train_and_evaluate(tiny_data, tmp_path):
    summary = train_vae(tiny_data, TINY, LOOP, tmp_path / "backbones", tmp_path / "work")
    history = json.loads((tmp_path / "work" / "state.json").read_text())["history"]
    assert history[-1]["score"] < history[0]["score"]  # −PSNR falls: reconstruction improves
    assert summary["best_val_psnr"] == pytest.approx(-min(h["score"] for h in history))
    vae = load_backbone("vae", "demo", tmp_path / "backbones")
    assert vae.scaling_factor != 1.0  # 1 / std of training latents
    z = vae.encode(tiny_data.split("train").frames[:4, 0])
    assert 0.3 < z.std() < 3.0
    meta = json.loads((tmp_path / "backbones" / "vae" / "meta.json").read_text())
    assert meta["data_key"] == tiny_data.dataset.key and meta["role"] == "vae"
    scores = evaluate_vae(tiny_data, tmp_path / "backbones")
    assert scores["vae_n_frames"] == tiny_data.split("test").frames.shape[0] * 8 and scores["vae_psnr"] > 5
    assert "vae_category_acc" not in scores  # no classifier in the folder: nothing to score the category with


def test_the_category_kept_by_the_decodings(tiny_data, tiny_backbones, tmp_path):
    """With the frame classifier beside it, the evaluation also classifies the decodings and the frames."""
    folder, _ = tiny_backbones
    scores = evaluate_vae(tiny_data, folder, batch_size=7)  # batches that cut clips apart
    vae = load_backbone("vae", "demo", folder)
    classifier = load_backbone("frame_classifier", "demo", folder)
    frames = tiny_data.split("test").frames
    flat = frames.reshape(-1, *frames.shape[2:])
    truth = np.repeat([tiny_data.categories[c] for c in tiny_data.labels["test"]["category_id"]], 8)
    decoded = np.concatenate([vae.decode(vae.encode(flat[i : i + 7])) for i in range(0, len(flat), 7)])
    predicted = np.asarray(classifier.labels)[classifier.logits(decoded).argmax(1)]  # knows 3 of the 12 categories
    assert scores["vae_category_acc"] == pytest.approx(np.mean(predicted == truth))
    assert 0 <= scores["vae_frame_category_acc"] <= 1
