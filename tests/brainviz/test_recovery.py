"""python -m pipelines attribution: ground-truth role recovery on the tiny simulated subject."""

import json

import numpy as np
import pytest

from brainviz import recovery
from pipelines.data.twin.brain import ROLES
from pipelines.data.twin.groundtruth import load_tuning


def test_voxel_roles_follow_the_simulated_tuning(tiny_twin, tiny_decoder_data):
    g = tiny_decoder_data.dataset.voxel_grayordinates
    roles = recovery.voxel_roles(tiny_twin, g)
    role = load_tuning(tiny_twin).role
    for i in np.flatnonzero(g >= 0)[:50]:
        assert roles[i] == ROLES[role[g[i]]]
    assert recovery.voxel_roles(tiny_twin, np.array([-1]))[0] == "none"


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "pattern"])
def test_recover_scores_every_trained_decoder(trained, tiny_config, tiny_decoder_data, tiny_twin, method):
    roles = recovery.voxel_roles(tiny_twin, tiny_decoder_data.dataset.voxel_grayordinates)
    result = recovery.recover(trained, tiny_config, tiny_decoder_data, roles, method=method, objective="target",
                              n_clips=4, n_steps=4)  # fmt: skip
    assert set(result["auc"]) == {"semantic", "structure", "motion", "flow", "fmri-encoder"}
    assert all(0.0 <= v <= 1.0 for v in result["auc"].values())
    assert result["simulated"] and result["n_clips"] == 4 and result["method"] == method
    assert (result["mean_abs_delta"]["semantic"] is None) == (method != "integrated_gradients")
    for shares in result["roi_shares"].values():
        assert sum(shares.values()) == pytest.approx(1.0)


def test_the_category_objective_is_the_default_and_applies_to_the_embedding_decoders_only(
    trained, tiny_config, tiny_decoder_data, tiny_twin
):
    roles = recovery.voxel_roles(tiny_twin, tiny_decoder_data.dataset.voxel_grayordinates)
    result = recovery.recover(trained, tiny_config, tiny_decoder_data, roles, method="saliency", n_clips=3)
    assert result["objectives"] == {"semantic": "category", "structure": "target", "motion": "target",
                                    "flow": "target", "fmri-encoder": "category"}  # fmt: skip
    test, seen = tiny_decoder_data.splits["test"], set(tiny_decoder_data.splits["train"].category.tolist())
    spaced = np.unique(np.linspace(0, len(test) - 1, 3).round().astype(int))
    assert result["n_clips"] == sum(int(test.category[i]) in seen for i in spaced)  # no prototype: left out
    target = recovery.recover(trained, tiny_config, tiny_decoder_data, roles, method="saliency", objective="target",
                              n_clips=3)  # fmt: skip
    assert set(target["objectives"].values()) == {"target"}
    assert target["auc"]["structure"] == result["auc"]["structure"]  # the other decoders are attributed as before
    assert target["auc"]["semantic"] != result["auc"]["semantic"]
    with pytest.raises(ValueError, match=r"objective: expected one of \['target', 'category'\], got 'object'"):
        recovery.recover(trained, tiny_config, tiny_decoder_data, roles, objective="object")


def test_cli_prints_json(trained, tiny_twin, tiny_backbones, decoder_cache, capsys):
    argv = ["--decoders", str(trained), "--config", "tiny", "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--cache-dir", str(decoder_cache), "--method", "saliency", "--n-clips", "3",
            "--objective", "target", "--json"]  # fmt: skip
    assert recovery.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["auc"]) == set(recovery.ROLE_OF) and result["n_clips"] == 3
    assert result["objectives"]["semantic"] == "target"


def test_cli_reads_a_bundles_decoders_with_the_pattern_method_by_default(
    trained, tiny_twin, tiny_backbones, decoder_cache, tmp_path, capsys
):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "decoders").symlink_to(trained, target_is_directory=True)
    argv = ["--bundle", str(bundle), "--config", "tiny", "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--cache-dir", str(decoder_cache), "--n-clips", "2", "--json"]  # fmt: skip
    assert recovery.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "pattern" and set(result["auc"]) == set(recovery.ROLE_OF)
    assert result["objectives"]["semantic"] == "category" and result["objectives"]["structure"] == "target"


def test_cli_errors(trained, tiny_twin, tiny_backbones, decoder_cache, tmp_path, capsys):
    base = ["--config", "tiny", "--backbones", str(tiny_backbones[0]), "--cache-dir", str(decoder_cache)]
    assert recovery.main(["--decoders", str(trained), "--data", str(tmp_path), *base]) == 1
    assert "is not a simulated subject" in capsys.readouterr().err
    assert recovery.main(["--decoders", str(tmp_path), "--data", str(tiny_twin), *base]) == 1
    assert "expected trained decoder folders" in capsys.readouterr().err
    assert recovery.main(["--bundle", str(tmp_path), "--data", str(tiny_twin), *base]) == 1
    assert "expected trained decoder folders" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --bundle and --decoders exclude each other
        recovery.main(["--bundle", str(tmp_path), "--decoders", str(trained), "--data", str(tiny_twin), *base])
