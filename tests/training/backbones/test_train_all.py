"""train-backbones and evaluate-backbones end to end on the tiny subject with the tiny architectures."""

import json

import pytest

from pipelines.training.backbones import evaluate_all, train_all

REQUIRED = ("clip_top1", "clip_chance", "vae_psnr", "renderer_category_acc", "renderer_chance", "raft_epe",
            "tvl1_epe", "zero_flow_epe")  # fmt: skip


@pytest.mark.slow
def test_train_then_evaluate_every_role(tiny_twin, tmp_path, capsys):
    out, cache = tmp_path / "backbones", str(tmp_path / "cache")
    args = ["--preset", "tiny", "--data", str(tiny_twin), "--out", str(out), "--cache-dir", cache]
    assert train_all.main(args) == 0
    for role in train_all.ORDER:
        meta = json.loads((out / role / "meta.json").read_text())
        assert "loop" in meta and meta.get("data_key"), role
    summary = json.loads((out / "backbones.json").read_text())
    assert list(summary["roles"]) == list(train_all.ORDER)
    capsys.readouterr()

    assert train_all.main(args) == 0  # everything is up to date: nothing retrains
    assert capsys.readouterr().out.count("up to date, skipped") == len(train_all.ORDER)
    meta_path = out / "vae" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "loop": {}}))  # outdated folder, run done
    assert train_all.main([*args, "--roles", "vae"]) == 0
    assert "vae: reloaded its finished run; backbones.json keeps that run's times" in capsys.readouterr().out
    assert json.loads((out / "backbones.json").read_text())["roles"]["vae"] == summary["roles"]["vae"]
    assert json.loads(meta_path.read_text())["loop"]  # the folder is up to date again

    assert train_all.main([*args, "--roles", "clip", "clip.steps=8"]) == 0  # changed settings: retrained
    assert "clip: training (8 steps" in capsys.readouterr().out
    negatives = [*args, "--roles", "clip", "clip.steps=8", "clip_hard_negatives=true", "clip_negatives_per_pair=2",
                 "clip_selection=retrieval+swap"]  # fmt: skip
    assert train_all.main(negatives) == 0  # an option of the role is a setting too
    assert "clip: training (8 steps" in capsys.readouterr().out
    loop = json.loads((out / "clip" / "meta.json").read_text())["loop"]
    assert loop["hard_negatives"] is True and loop["negatives_per_pair"] == 2 and loop["selection"] == "retrieval+swap"
    again = [*args, "--roles", "clip,unet", *negatives[len(args) + 2 :]]
    assert train_all.main(again) == 0  # the UNet was trained on the first CLIP: out of date now
    printed = capsys.readouterr().out
    assert "clip: up to date" in printed and "unet: training" in printed
    assert train_all.main(again) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    assert train_all.main([*negatives, "arch.clip.text_layers=2"]) == 0  # another architecture: retrained
    assert "clip: training (8 steps" in capsys.readouterr().out

    small = ["--clip-candidates", "5", "--renderer-samples", "3", "--renderer-steps", "2", "--raft-pairs", "3"]
    assert (
        evaluate_all.main(["--backbones", str(out), "--data", str(tiny_twin), "--cache-dir", cache, "--json", *small])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    for key in REQUIRED:
        assert key in results, key
    assert results["missing"] == [] and results["simulated"] is True
    assert results["clip_chance"] == pytest.approx(0.2)
    assert set(results["targets_met"]) == set(evaluate_all.TARGETS)
    assert all(isinstance(met, bool) for met in results["targets_met"].values())


def test_acceptance_checks_each_target_against_its_bound():
    results = {"clip_top1": 0.05, "clip_chance": 0.01, "vae_psnr": 24.9, "raft_epe": 0.2, "tvl1_epe": 0.3,
               "zero_flow_epe": 0.9}  # fmt: skip
    assert evaluate_all.acceptance(results) == {
        "clip_top1 >= 5 x clip_chance": True,  # 0.05 >= 5 x 0.01: the bound itself is met
        "vae_psnr >= 25 dB": False,
        "renderer_category_acc >= 3 x renderer_chance": None,  # not measured
        "raft_epe < tvl1_epe": True,
        "raft_epe <= zero_flow_epe / 3": True,  # 0.2 <= 0.9 / 3
    }
    assert evaluate_all.acceptance({**results, "raft_epe": 0.3})["raft_epe < tvl1_epe"] is False  # strictly lower
    assert evaluate_all.acceptance({**results, "raft_epe": 0.31})["raft_epe <= zero_flow_epe / 3"] is False


def test_bad_arguments(tmp_path, tiny_twin):
    with pytest.raises(ValueError, match=r"roles: unknown \['depth'\]"):
        train_all.train_backbones(tiny_twin, tmp_path, None, None, roles=("depth",))
    with pytest.raises(FileNotFoundError, match="nowhere does not exist; expected a folder written by train-backbones"):
        evaluate_all.evaluate_backbones(tmp_path / "nowhere", tiny_twin)
    with pytest.raises(FileNotFoundError, match="is not a simulated subject"):
        train_all.train_backbones(tmp_path, tmp_path / "out", None, None, roles=("clip",))
