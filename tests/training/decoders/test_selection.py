"""Test data never reaches checkpoint selection or fitting: poisoning the test split changes nothing that is trained.

Every stage is trained (seeded) on the tiny subject and on a copy whose test split is garbage (NaN fMRI, random
targets and frames, shuffled captions); the saved weights and validation histories must be identical. The ridge
baselines must see train and val rows only. A control shows the same comparison does notice the val split.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.training.decoders import evaluate
from pipelines.training.decoders.config import STAGES
from pipelines.training.decoders.data import DecoderData, DecoderSplit
from pipelines.training.decoders.evaluate import evaluate_stage
from pipelines.training.decoders.stages import make_stage
from pipelines.training.decoders.train import train_stage


def garbage(split: DecoderSplit, seed: int, fmri_nan: bool = True) -> DecoderSplit:
    """A split of the same shapes whose every array is noise (NaN fMRI unless ``fmri_nan`` is False)."""
    rng = np.random.default_rng(seed)

    def noise(a):
        return rng.standard_normal(a.shape).astype(a.dtype)

    return replace(
        split,
        fmri=np.full_like(split.fmri, np.nan) if fmri_nan else noise(split.fmri),
        captions=rng.permutation(split.captions),
        text=noise(split.text),
        video=noise(split.video),
        tokens=noise(split.tokens),
        latents=noise(split.latents),
        flows=noise(split.flows) * 5,
        first_frames=rng.integers(0, 256, split.first_frames.shape, dtype=np.uint8),
        category=None if split.category is None else rng.permutation(split.category),
        direction=None if split.direction is None else rng.permutation(split.direction),
    )


def poison(data: DecoderData, split: str, **kwargs) -> DecoderData:
    """A copy of ``data`` with ``split`` replaced by garbage, also in the prepared dataset; ``data`` is untouched."""
    bad = garbage(data.splits[split], seed=1, **kwargs)
    prepared = data.dataset.splits[split]
    frames = None if prepared.frames is None else np.zeros_like(prepared.frames)
    prepared = replace(prepared, fmri=np.full_like(prepared.fmri, np.nan), frames=frames)
    dataset = replace(data.dataset, splits={**data.dataset.splits, split: prepared})
    return replace(data, dataset=dataset, splits={**data.splits, split: bad})


@pytest.fixture(scope="module")
def poisoned(tiny_decoder_data):
    data = poison(tiny_decoder_data, "test")
    assert np.isnan(data.splits["test"].fmri).all() and not np.isnan(tiny_decoder_data.splits["test"].fmri).any()
    return data


def saved(folder):
    meta = json.loads((folder / "meta.json").read_text())
    return load_file(folder / "model.safetensors"), meta, (folder / "config.json").read_text()


@pytest.mark.parametrize("stage", STAGES)
def test_poisoned_test_split_changes_no_trained_weight(stage, tiny_config, tiny_decoder_data, poisoned, tmp_path):
    torch.manual_seed(0)
    train_stage(stage, tiny_config, tiny_decoder_data, tmp_path / "clean")
    torch.manual_seed(0)
    train_stage(stage, tiny_config, poisoned, tmp_path / "poisoned")
    clean_weights, clean_meta, clean_config = saved(tmp_path / "clean" / stage)
    weights, meta, config = saved(tmp_path / "poisoned" / stage)
    assert config == clean_config
    assert weights.keys() == clean_weights.keys()
    changed = [k for k in weights if not torch.equal(weights[k], clean_weights[k])]
    assert not changed, f"{stage}: expected identical weights with a poisoned test split, got changes in {changed}"
    assert meta["history"] == clean_meta["history"] and len(meta["history"]) == 2
    assert meta["best_step"] == clean_meta["best_step"]
    assert meta["best_validation_score"] == clean_meta["best_validation_score"]
    assert all(np.isfinite(h["score"]) for h in meta["history"])


@pytest.mark.parametrize("stage", STAGES)
def test_the_comparison_notices_a_poisoned_val_split(stage, tiny_config, tiny_decoder_data):
    # control: the validation score, which selects checkpoints, does read val (so equal scores above mean something)
    bad_val = poison(tiny_decoder_data, "val", fmri_nan=False)
    scores = []
    for data in (tiny_decoder_data, bad_val):
        runner = make_stage(stage, tiny_config.stages[stage], data)
        torch.manual_seed(0)
        model = runner.build().eval()
        runner.prepare(model)
        scores.append(runner.validate(model))
    assert scores[0] != scores[1], f"{stage}: expected the validation score to depend on val, got {scores}"


class _Fitted(Exception):
    """Stops an evaluation right after its ridge baseline is fitted."""


@pytest.mark.parametrize("stage", STAGES)
def test_ridge_baselines_are_fitted_without_test_rows(stage, tiny_config, tiny_decoder_data, poisoned, monkeypatch):
    fits, fit = [], evaluate.fit_ridge

    def recording_fit(x_train, y_train, x_val, y_val, *args, **kwargs):
        fitted = fit(x_train, y_train, x_val, y_val, *args, **kwargs)
        fits.append(((len(x_train), len(y_train), len(x_val), len(y_val)), fitted))
        raise _Fitted  # what follows only predicts the test split

    monkeypatch.setattr(evaluate, "fit_ridge", recording_fit)
    for data in (tiny_decoder_data, poisoned):
        runner = make_stage(stage, tiny_config.stages[stage], data)
        torch.manual_seed(0)
        model = runner.build().eval()
        runner.prepare(model)
        with pytest.raises(_Fitted):
            evaluate_stage(stage, model, tiny_config, data)
    n_train, n_val = len(tiny_decoder_data.splits["train"]), len(tiny_decoder_data.splits["val"])
    assert [rows for rows, _ in fits] == [(n_train, n_train, n_val, n_val)] * 2
    (_, clean), (_, dirty) = fits
    assert clean.alpha == dirty.alpha and clean.validation_mse == dirty.validation_mse
    for name in ("x_mean", "x_scale", "x_train", "dual", "y_mean"):
        np.testing.assert_array_equal(getattr(dirty, name), getattr(clean, name), err_msg=f"{stage}: ridge {name}")


@pytest.mark.parametrize("stage", ["semantic", "fmri-encoder"])
def test_a_nan_checkpoint_is_never_selected(stage, tiny_config, tiny_decoder_data):
    # a diverged model must score worst on validation, or the loop keeps it as the best checkpoint
    runner = make_stage(stage, tiny_config.stages[stage], tiny_decoder_data)
    torch.manual_seed(0)
    model = runner.build().eval()
    healthy = runner.validate(model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    diverged = runner.validate(model)
    assert not diverged < healthy, f"expected a NaN model to score no better than {healthy}, got {diverged}"


def test_train_stage_is_reproducible_without_outside_seeding(tiny_config, tiny_decoder_data, tmp_path):
    first = train_stage("structure", tiny_config, tiny_decoder_data, tmp_path / "a")
    second = train_stage("structure", tiny_config, tiny_decoder_data, tmp_path / "b")
    a, b = load_file(tmp_path / "a/structure/model.safetensors"), load_file(tmp_path / "b/structure/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "expected identical weights from identical runs"
    assert first["history"] == second["history"]
