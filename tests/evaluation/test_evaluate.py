"""``python -m pipelines evaluate`` on the tiny random pipeline saved as a bundle with synthetic test clips."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from pipelines.config import to_dict
from pipelines.evaluation import evaluate
from pipelines.evaluation.protocols import load_protocol
from pipelines.reconstruct import TEST_CLIPS
from tests.conftest import build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """The tiny pipeline (4 frames of 16 px at 4 fps, 3 classes) with 4 random test clips."""
    root = tmp_path_factory.mktemp("tiny-bundle")
    pipeline = build_tiny_pipeline()
    pipeline.config = dataclasses.replace(pipeline.config, num_inference_steps=4)
    pipeline.save_pretrained(root)
    rng = np.random.default_rng(0)
    tensors = {
        "fmri": torch.from_numpy(rng.normal(size=(4, 5, 24)).astype(np.float32)),
        "frames": torch.from_numpy(rng.integers(0, 256, (4, 4, 16, 16, 3), dtype=np.uint8)),
        "category": torch.tensor([0, 1, 2, 0]),
        "direction": torch.tensor([0, 1, 0, 1]),
    }
    save_file(tensors, root / TEST_CLIPS, metadata={"captions": json.dumps(["a ball", "a car", "a star", "a ball"])})
    return root


@pytest.fixture(scope="module")
def small_protocol(tmp_path_factory):
    """Mind-Animator's protocol at the tiny clips' length and size (4 frames at 4 fps, 32 px)."""
    protocol = dataclasses.replace(load_protocol("mind-animator"), n_frames=4, resolution=32, n_way_trials=10)
    path = tmp_path_factory.mktemp("protocol") / "small.yaml"
    path.write_text(yaml.safe_dump(to_dict(protocol)))
    return path


def test_results_json_has_the_documented_schema(tiny_bundle, small_protocol, tiny_backbones, tmp_path):
    out = tmp_path / "eval"
    argv = ["--bundle", str(tiny_bundle), "--protocol", str(small_protocol), "--backbones", str(tiny_backbones[0]),
            "--limit", "3", "--ablations", "--shuffle-test", "--baselines", "--out", str(out), "--batch-size", "2"]  # fmt: skip
    assert evaluate.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["simulated"] is True and results["n_clips"] == 3
    summary = results["protocols"]["mind-animator"]
    for metric in ("ssim", "psnr", "epe", "2way_i", "2way_v", "category_acc"):
        assert {"mean", "std"} <= set(summary[metric]), metric
    assert summary["2way_v"]["chance"] == pytest.approx(0.75) and summary["category_acc"]["chance"] == 1 / 3
    assert set(results["ablations"]) == set(evaluate.CONDITIONS)
    assert {"metric", "p_mean", "p_std"} <= set(results["shuffle_test"])
    assert set(results["baselines"]["joint"]) == set(summary)
    assert results["ablations"]["full"] == summary
    assert (out / "ablations.png").stat().st_size > 0
    assert "Simulated subject" in (out / "results.md").read_text()
    assert {p.name for p in (out / "videos").glob("*.npy")} == {f"{c}.npy" for c in evaluate.CONDITIONS + ("joint",)}


def test_cached_videos_are_reused_and_a_changed_setting_redoes_them(tiny_bundle, monkeypatch, tmp_path):
    from pipelines.reconstruct import VideoReconstructionPipeline

    pipeline = VideoReconstructionPipeline.from_pretrained(tiny_bundle)
    fmri = np.random.default_rng(1).normal(size=(3, 5, 24)).astype(np.float32)
    first = evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="a")
    assert first.shape == (3, 4, 16, 16, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("reconstructed again")

    monkeypatch.setattr(VideoReconstructionPipeline, "__call__", refuse)
    np.testing.assert_array_equal(
        evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="a"), first
    )
    with pytest.raises(AssertionError, match="reconstructed again"):
        evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="b")
    with pytest.raises(ValueError, match=r"condition: expected one of \['full', 'no_semantic'"):
        evaluate.reconstruct_condition(pipeline, fmri, "no_colour", 2)


def test_evaluate_errors(tiny_bundle, tiny_backbones, tmp_path, capsys):
    base = ["--backbones", str(tiny_backbones[0]), "--out", str(tmp_path)]
    assert evaluate.main(["--bundle", str(tmp_path / "none"), *base]) == 1
    assert "bundle.json does not exist" in capsys.readouterr().err
    assert evaluate.main(["--bundle", str(tiny_bundle), "--limit", "1", *base]) == 1
    assert "expected at least 2 test clips" in capsys.readouterr().err
    assert evaluate.main(["--bundle", str(tiny_bundle), "--set", "colour", *base]) == 1
    assert "--set: expected FIELD=VALUE" in capsys.readouterr().err
    assert evaluate.main(["--bundle", str(tiny_bundle), "--set", "colour=1", *base]) == 1
    assert "unknown ['colour']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--bundle", str(tiny_bundle)])  # --backbones is required for the demo tier


def moving_texture(n_clips=3, n_frames=4, size=32, step=2, seed=0):
    """Clips of a smooth random texture translating ``step`` px right per frame (Farnebäck tracks it)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n_clips):
        texture = gaussian_filter(rng.random((size, size + step * n_frames)), 2.0)
        texture = (255 * (texture - texture.min()) / np.ptp(texture)).astype(np.uint8)
        frames = [texture[:, step * (n_frames - j) : step * (n_frames - j) + size] for j in range(n_frames)]
        clips.append(np.repeat(np.stack(frames)[..., None], 3, axis=-1))
    return np.stack(clips)


@pytest.fixture(scope="module")
def tiny_farneback():
    return dataclasses.replace(load_protocol("mind-animator"), n_frames=4, resolution=32)


def test_shuffle_test_of_the_ground_truth_itself_has_p_zero(tiny_farneback):
    truth = moving_texture()
    result = evaluate.frame_order_shuffle_test(truth, truth, 4.0, tiny_farneback, n_permutations=20, n_repeats=2)
    assert result["p_mean"] == 0.0 and result["metric"] == "epe"
    # the in-order EPE from pair flows equals the harness's EPE of the same videos
    flows = np.stack([evaluate.metrics.farneback_flow(v) for v in truth])
    assert result["observed"] == pytest.approx(float(evaluate.metrics.flow_epe(flows, flows).mean()), abs=1e-9)


def test_shuffle_test_of_reversed_frames_is_beaten_by_most_orders(tiny_farneback):
    truth = moving_texture()
    result = evaluate.frame_order_shuffle_test(truth[:, ::-1], truth, 4.0, tiny_farneback, n_permutations=50,
                                               n_repeats=2)  # fmt: skip
    assert result["p_mean"] > 0.5


def test_shuffle_test_needs_consecutive_farneback_epe(tiny_farneback):
    truth = moving_texture()
    with pytest.raises(ValueError, match="expected a protocol with Farnebäck EPE between consecutive frames"):
        evaluate.frame_order_shuffle_test(truth, truth, 4.0, dataclasses.replace(tiny_farneback, flow="raft"))
