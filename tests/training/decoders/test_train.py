"""python -m pipelines train: every stage trains a few steps on the tiny subject, saves, resumes and skips."""

import json

import numpy as np
import pytest
import torch

from pipelines.models.registry import DECODERS
from pipelines.training.decoders import train as train_cli
from pipelines.training.decoders.config import STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_and_saves(stage, tiny_twin, tiny_backbones, decoder_cache, tmp_path):
    args = ["--stage", stage, "--config", "tiny", "--data", str(tiny_twin), "--backbones", str(tiny_backbones[0]),
            "--out", str(tmp_path), "--cache-dir", str(decoder_cache)]  # fmt: skip
    assert train_cli.main(args) == 0
    meta = json.loads((tmp_path / stage / "meta.json").read_text())
    assert meta["stage"] == stage and meta["best_step"] in (3, 6)
    assert [h["step"] for h in meta["history"]] == [3, 6]
    assert all(np.isfinite(h["score"]) and np.isfinite(h["train_loss"]) for h in meta["history"])
    model = DECODERS[stage].from_pretrained(tmp_path / stage)
    assert not model.training and all(torch.isfinite(p).all() for p in model.parameters())


def test_an_up_to_date_stage_is_skipped_and_changed_settings_retrain(
    tiny_twin, tiny_backbones, decoder_cache, tmp_path, capsys
):
    args = ["--stage", "structure", "--config", "tiny", "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--out", str(tmp_path), "--cache-dir", str(decoder_cache)]  # fmt: skip
    assert train_cli.main(args) == 0
    first = json.loads((tmp_path / "structure" / "meta.json").read_text())
    capsys.readouterr()
    assert train_cli.main(args) == 0
    assert "is up to date" in capsys.readouterr().out
    assert json.loads((tmp_path / "structure" / "meta.json").read_text()) == first
    assert train_cli.main([*args, "structure.loop.steps=4", "structure.loop.eval_every=2"]) == 0
    again = json.loads((tmp_path / "structure" / "meta.json").read_text())
    assert again["run_hash"] != first["run_hash"] and [h["step"] for h in again["history"]] == [2, 4]


def test_bad_config_exits_with_a_message(tiny_twin, tiny_backbones, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  hrf:\n    mode: shift\n")
    args = ["--stage", "semantic", "--config", str(bad), "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--out", str(tmp_path / "out")]  # fmt: skip
    assert train_cli.main(args) == 1
    assert "data.hrf: expected mode 'window'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
