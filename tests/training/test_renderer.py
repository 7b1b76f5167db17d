"""python -m pipelines train-renderer: only the temporal layers train, the result reloads, runs resume, errors explain."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from pipelines.models.video_unet import VIDEO_CONFIG, VideoUNet, inflate_unet
from pipelines.training import loop as loop_module
from pipelines.training import renderer as renderer_module
from pipelines.training.loop import LoopConfig
from pipelines.training.renderer import main, train_renderer
from tests.features.conftest import tiny_backbones  # noqa: F401  (one definition, shared)
from tests.training.backbones.conftest import tiny_data  # noqa: F401

LOOP = LoopConfig(steps=4, batch_size=2, lr=1e-2, warmup=1, eval_every=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_data, tiny_backbones, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("renderer")
    meta = train_renderer(tiny_data, tiny_backbones[0], root / "out", LOOP, noise_beta=0.3, workdir=root / "work")
    return root, meta


def _named_temporal(model: VideoUNet) -> set[str]:
    ids = {id(p) for p in model.temporal_parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_only_the_temporal_layers_change(trained, tiny_backbones):  # noqa: F811
    root, _ = trained
    model = VideoUNet.from_pretrained(root / "out")
    original = inflate_unet(UNet2DConditionModel.from_pretrained(tiny_backbones[0] / "unet"), temporal=True)
    temporal = _named_temporal(model)
    assert temporal and temporal == _named_temporal(original)
    before = dict(original.named_parameters())
    changed = set()
    for name, p in model.named_parameters():
        if name in temporal:
            if not torch.equal(p, before[name]):
                changed.add(name)
        else:
            torch.testing.assert_close(p, before[name], rtol=0, atol=0, msg=name)
    # every output projection left its zero initialisation, so the layers now add something
    assert {n for n in temporal if ".to_out.0." in n} <= changed


def test_meta_records_the_run(trained, tiny_data):  # noqa: F811
    root, meta = trained
    saved = json.loads((root / "out" / VIDEO_CONFIG).read_text())
    assert saved["temporal"] is True and saved["noise_beta"] == 0.3
    assert saved["data_key"] == tiny_data.dataset.key and saved["steps"] == LOOP.steps
    assert saved["best_step"] in (2, 4) and saved["loop"]["batch_size"] == LOOP.batch_size
    (work,) = (root / "work").iterdir()  # one folder per settings
    history = json.loads((work / "state.json").read_text())["history"]
    assert meta["best_val_loss"] == pytest.approx(min(h["score"] for h in history))
    assert np.isfinite(meta["baseline_val_loss"]) and meta["baseline_val_loss"] > 0
    assert meta["n_trained_params"] == sum(
        p.numel() for p in VideoUNet.from_pretrained(root / "out").temporal_parameters()
    )


def _counting_train(calls: list, fail_at: int | None = None):
    """loop.train with its training loss counted (and a crash at call ``fail_at``)."""

    def wrapped(name, model, sample_batch, loss_fn, *args, **kwargs):
        def counted(m, batch):
            calls.append(1)
            if len(calls) == fail_at:
                raise KeyboardInterrupt
            return loss_fn(m, batch)

        return loop_module.train(name, model, sample_batch, counted, *args, **kwargs)

    return wrapped


def test_an_interrupted_run_resumes(trained, tiny_data, tiny_backbones, tmp_path, monkeypatch):  # noqa: F811
    root, meta = trained
    calls = []
    monkeypatch.setattr(renderer_module, "train", _counting_train(calls, fail_at=3))  # after the step-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_renderer(tiny_data, tiny_backbones[0], tmp_path / "out", LOOP, noise_beta=0.3, workdir=tmp_path)
    calls.clear()
    monkeypatch.setattr(renderer_module, "train", _counting_train(calls))
    resumed = train_renderer(tiny_data, tiny_backbones[0], tmp_path / "out", LOOP, noise_beta=0.3, workdir=tmp_path)
    assert len(calls) == LOOP.steps - 2  # steps 3 and 4 only
    assert resumed["best_val_loss"] == pytest.approx(meta["best_val_loss"])
    assert resumed["baseline_val_loss"] == pytest.approx(meta["baseline_val_loss"])
    a, b = VideoUNet.from_pretrained(root / "out"), VideoUNet.from_pretrained(tmp_path / "out")
    for p, q in zip(a.temporal_parameters(), b.temporal_parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_missing_backbones_are_explained(tiny_data, tmp_path, capsys):  # noqa: F811
    (tmp_path / "backbones" / "vae").mkdir(parents=True)
    (tmp_path / "backbones" / "clip").mkdir()
    with pytest.raises(FileNotFoundError, match=r"backbones/unet does not exist; expected the demo-tier unet"):
        train_renderer(tiny_data, tmp_path / "backbones", tmp_path / "out", LOOP)
    args = ["--data", str(tmp_path), "--backbones", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none/vae does not exist; expected the demo-tier vae" in err


def test_bad_settings_are_refused(tiny_data, tiny_backbones, tmp_path, capsys):  # noqa: F811
    with pytest.raises(ValueError, match=r"noise_beta: expected a number in \[0, 1\].*got 1.5"):
        train_renderer(tiny_data, tiny_backbones[0], tmp_path / "out", LOOP, noise_beta=1.5)
    args = ["--data", str(tmp_path), "--backbones", str(tiny_backbones[0]), "--out", str(tmp_path / "out")]
    assert main([*args, "--steps", "0"]) == 1
    assert "error: --steps and --batch-size: expected positive integers, got 0 and 4." in capsys.readouterr().err
