"""``python -m pipelines tune-bundle``: grid parsing, selection, the bundle rewrite, and the no-test-clips rule."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.evaluation import tune
from pipelines.reconstruct import BUNDLE_JSON, BundleClips, VideoReconstructionPipeline


def test_parse_grid_reads_json_values_and_bare_strings():
    grid = tune.parse_grid(["flow_weight=0,0.5,1", "flow_space=pixel,latent"])
    assert grid == {"flow_weight": [0, 0.5, 1], "flow_space": ["pixel", "latent"]}
    points = tune.grid_points(grid)
    assert len(points) == 6 and points[0] == {"flow_weight": 0, "flow_space": "pixel"}
    assert points[1] == {"flow_weight": 0, "flow_space": "latent"}  # the last field varies fastest


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["flow_weight"], "expected FIELD=VALUE"),
        (["flow_weight="], "expected FIELD=VALUE"),
        (["colour=1"], "expected a ReconstructionConfig field"),
        (["schedule=1"], "expected a ReconstructionConfig field"),
        (["seed=1", "seed=2"], "given twice"),
        ([], "at least one"),
    ],
)
def test_parse_grid_errors(items, message):
    with pytest.raises(ValueError, match=message):
        tune.parse_grid(items)


def scores(values, metric="epe"):
    return [{"values": {"flow_weight": i}, "metrics": {metric: {"mean": v}}} for i, v in enumerate(values)]


def test_choose_minimises_epe_and_maximises_the_rest_first_on_ties():
    assert tune.choose(scores([2.0, 1.5, 1.5, 3.0]), "epe") == 1
    assert tune.choose(scores([0.2, 0.6, 0.6], "ssim"), "ssim") == 1
    with pytest.raises(ValueError, match="'vifi' was not measured; expected one of \\['epe'\\]"):
        tune.choose(scores([1.0]), "vifi")


class FakeSplit(SimpleNamespace):
    def __len__(self):
        return len(self.fmri)


def fake_data(n=5):
    """A DecoderData-like object: val and test splits of a 24-voxel subject with 4 frames of 16 px."""
    rng = np.random.default_rng(0)
    splits, frames = {}, {}
    for seed, name in enumerate(("val", "test"), start=1):
        splits[name] = FakeSplit(
            fmri=rng.normal(size=(n, 5, 24)).astype(np.float32),
            captions=np.array([f"clip {seed}-{i}" for i in range(n)]),
            category=np.arange(n) % 3,
            direction=np.arange(n) % 2,
        )
        frames[name] = SimpleNamespace(frames=rng.integers(0, 256, (n, 4, 16, 16, 3), dtype=np.uint8))
    return SimpleNamespace(splits=splits, dataset=SimpleNamespace(splits=frames))


def test_split_clips_reads_validation_and_refuses_test():
    data = fake_data()
    clips = tune.split_clips(data, "val", limit=3)
    assert isinstance(clips, BundleClips) and len(clips) == 3
    np.testing.assert_array_equal(clips.fmri, data.splits["val"].fmri[:3])
    np.testing.assert_array_equal(clips.frames, data.dataset.splits["val"].frames[:3])
    assert clips.captions == ["clip 1-0", "clip 1-1", "clip 1-2"]
    with pytest.raises(ValueError, match="got 'test'"):
        tune.split_clips(data, "test")
    with pytest.raises(ValueError, match="expected one of \\['test', 'val'\\], got 'train'"):
        tune.split_clips(data, "train")


def test_tune_bundle_writes_the_best_point_and_its_record(tiny_bundle, small_protocol, tiny_backbones, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    clips = tune.split_clips(fake_data(4), "val")
    grid = {"flow_weight": [0.0, 1.0], "flow_space": ["pixel"]}
    record = tune.tune_bundle(
        bundle, clips, grid, "epe", str(small_protocol), tiny_backbones[0], tmp_path / "t", batch_size=2
    )
    assert record["split"] == "val" and record["n_clips"] == 4 and len(record["scores"]) == 2
    epe = [s["metrics"]["epe"]["mean"] for s in record["scores"]]
    assert record["chosen_index"] == int(np.argmin(epe))
    assert json.loads((tmp_path / "t" / "tuning.json").read_text())["chosen"] == record["chosen"]
    pipeline = VideoReconstructionPipeline.from_pretrained(bundle)
    assert pipeline.config.flow_weight == record["chosen"]["flow_weight"]
    assert pipeline.tuning["split"] == "val" and len(pipeline.tuning["objective_by_point"]) == 2
    pipeline.save_pretrained(tmp_path / "copy")  # a re-saved bundle keeps how its settings were chosen
    assert json.loads((tmp_path / "copy" / BUNDLE_JSON).read_text())["tuning"] == pipeline.tuning


def test_write_tuning_checks_values_before_writing(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = (bundle / BUNDLE_JSON).read_text()
    record = {"split": "val", "n_clips": 2, "protocol": "p", "objective": "epe", "grid": {}, "chosen": {"seed": "x"},
              "scores": []}  # fmt: skip
    with pytest.raises(ValueError, match="seed"):
        tune.write_tuning(bundle, record)
    assert (bundle / BUNDLE_JSON).read_text() == before


def test_tune_bundle_cli_errors(tiny_bundle, tiny_backbones, tmp_path, capsys):
    base = ["--bundle", str(tiny_bundle), "--data", str(tmp_path / "none"), "--backbones", str(tiny_backbones[0])]
    assert tune.main([*base, "--grid", "colour=1"]) == 1
    assert "expected a ReconstructionConfig field" in capsys.readouterr().err
    assert tune.main([*base, "--grid", "flow_weight=0,1"]) == 1
    assert "none" in capsys.readouterr().err  # the missing subject folder is named
    with pytest.raises(SystemExit):
        tune.main(["--bundle", str(tiny_bundle), "--data", "x", "--backbones", "y"])  # --grid is required
