"""``python -m pipelines evaluate`` on the tiny random pipeline saved as a bundle with synthetic test clips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.config import to_dict
from pipelines.evaluation import evaluate
from pipelines.evaluation.protocols import load_protocol


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
    assert {p.name for p in (out / "videos").glob("*.npz")} == {f"{c}.npz" for c in evaluate.CONDITIONS + ("joint",)}
    decoders = results["decoders"]
    for key in ("semantic_retrieval_top10", "semantic_retrieval_chance", "flow_epe", "flow_epe_zero",
                "flow_epe_shuffled", "category_acc", "category_chance", "direction_acc", "direction_chance"):  # fmt: skip
        assert isinstance(decoders[key], float), key
    assert decoders["direction_chance"] == 1 / 8 and decoders["category_acc"] == summary["category_acc"]["mean"]
    assert set(results["ablation_tests"]) == set(evaluate.CONDITIONS[1:])
    assert {"mean_difference", "paired_p", "bootstrap_p", "worse"} <= set(
        results["ablation_tests"]["no_motion"]["ssim"]
    )
    text = (out / "results.md").read_text()
    assert "Wilcoxon" in text and "direction_acc" in text


def test_cached_videos_are_reused_and_a_changed_setting_redoes_them(tiny_bundle, monkeypatch, tmp_path):
    from pipelines.reconstruct import VideoReconstructionPipeline

    pipeline = VideoReconstructionPipeline.from_pretrained(tiny_bundle)
    fmri = np.random.default_rng(1).normal(size=(3, 5, 24)).astype(np.float32)
    first = evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="a")
    assert first.frames.shape == (3, 4, 16, 16, 3) and first.flow.shape == (3, 3, 2, 8, 8)
    assert first.embedding.shape[0] == 3
    assert evaluate.reconstruct_condition(pipeline, fmri, "no_semantic", 2).embedding is None

    def refuse(*args, **kwargs):
        raise AssertionError("reconstructed again")

    monkeypatch.setattr(VideoReconstructionPipeline, "__call__", refuse)
    again = evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="a")
    for name in ("frames", "embedding", "flow"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    with pytest.raises(AssertionError, match="reconstructed again"):
        evaluate.reconstruct_condition(pipeline, fmri, "no_motion", 2, tmp_path, key="b")
    with pytest.raises(ValueError, match=r"condition: expected one of \['full', 'no_semantic'"):
        evaluate.reconstruct_condition(pipeline, fmri, "no_colour", 2)


def test_measurements_are_cached_and_an_interrupted_run_resumes(
    tiny_bundle, small_protocol, tiny_backbones, monkeypatch, tmp_path
):
    out = tmp_path / "eval"
    argv = ["--bundle", str(tiny_bundle), "--protocol", str(small_protocol), "--backbones", str(tiny_backbones[0]),
            "--limit", "3", "--ablations", "--baselines", "--out", str(out), "--batch-size", "3"]  # fmt: skip
    calls = []
    measure = evaluate.measure_protocol

    def crash_on_the_second_ablation(predicted, *args, **kwargs):
        calls.append(predicted.copy())
        if len(calls) == 4:  # full, joint, no_semantic measured: crash on no_structure
            raise KeyboardInterrupt
        return measure(predicted, *args, **kwargs)

    monkeypatch.setattr(evaluate, "measure_protocol", crash_on_the_second_ablation)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(argv)
    assert {p.name for p in (out / "metrics").iterdir()} == {
        f"mind-animator.{c}.json" for c in ("full", "joint", "no_semantic")
    }
    calls.clear()
    monkeypatch.setattr(evaluate, "measure_protocol", lambda *a, **k: calls.append(1) or measure(*a, **k))
    assert evaluate.main(argv) == 0
    assert len(calls) == len(evaluate.CONDITIONS) - 2  # only the ablations the crash left unmeasured
    first = json.loads((out / "results.json").read_text())
    calls.clear()
    assert evaluate.main(argv) == 0 and calls == []  # everything from the cache, with the same numbers
    assert json.loads((out / "results.json").read_text()) == first
    assert evaluate.main([*argv, "--set", "guidance_scale=2"]) == 0  # another setting: new videos, new numbers
    assert len(calls) == len(evaluate.CONDITIONS) + 1


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


def direction_raft(first, second):
    """A stand-in flow estimator: clip frames filled with value k move one pixel at k × 45 degrees."""
    angle = np.radians(first[:, 0, 0, 0].astype(np.float64) * 45.0)
    flow = np.stack([np.cos(angle), np.sin(angle)], axis=-1)[:, None, None, :]
    return np.broadcast_to(flow, (*first.shape[:3], 2)).astype(np.float32)


def test_decoder_scores_on_constructed_answers():
    n, rng = 12, np.random.default_rng(0)
    text = rng.normal(size=(n, 8))
    flows = rng.normal(size=(n, 3, 2, 4, 4))
    truth = np.arange(n) % 8
    frames = np.broadcast_to(truth[:, None, None, None, None], (n, 4, 8, 8, 3)).astype(np.uint8)
    clips = evaluate.BundleClips(np.zeros((n, 5, 3), np.float32), frames, [f"c{i}" for i in range(n)], truth % 3,
                                 truth, text, flows)  # fmt: skip
    recon = evaluate.Reconstructions(frames, embedding=text.copy(), flow=flows.copy())
    out = evaluate.decoder_scores(recon, clips, direction_raft, {"mean": 0.5, "chance": 1 / 3}, n_permutations=200)
    assert out["semantic_retrieval_top10"] == 1.0 and out["semantic_retrieval_chance"] == pytest.approx(10 / 12)
    assert out["flow_epe"] == 0.0
    assert out["flow_epe_zero"] == pytest.approx(np.linalg.norm(flows, axis=2).mean())
    assert out["flow_epe_shuffled"] > out["flow_epe_zero"]  # another clip's flow is worse than no flow here
    assert out["direction_acc"] == 1.0 and out["direction_acc_ground_truth"] == 1.0
    assert out["direction_p"] == pytest.approx(1 / 201) and out["direction_chance"] == 1 / 8
    assert out["direction_agreement"] == 1.0 and out["direction_agreement_p"] == pytest.approx(1 / 201)
    assert (out["category_acc"], out["category_chance"]) == (0.5, 1 / 3)
    wrong = evaluate.Reconstructions((frames + 4) % 8, embedding=None, flow=None)  # every direction reversed
    out = evaluate.decoder_scores(wrong, clips, direction_raft, n_permutations=200)
    assert out["direction_acc"] == 0.0 and out["direction_p"] == 1.0
    assert out["direction_agreement"] == 0.0 and out["direction_agreement_p"] == 1.0
    assert "semantic_retrieval_top10" not in out and "flow_epe" not in out and "category_acc" not in out


def test_direction_agreement_compares_with_the_ground_truths_own_flow_not_the_label():
    """Labels that disagree with what moves on screen (a pan) leave the agreement with the ground truth's flow intact;
    without labels (real data) only the agreement is reported. Reference: a hand count of the pairs."""
    n = 8
    seen = np.array([0, 0, 2, 2, 4, 4, 6, 6])  # directions on screen: 0, 90, 180, 270 degrees
    frames = np.broadcast_to(seen[:, None, None, None, None], (n, 3, 4, 4, 3)).astype(np.uint8)
    recon_dirs = np.array([0, 0, 2, 4, 4, 4, 6, 0])  # 6 of 8 match the ground truth's direction
    recon = evaluate.Reconstructions(np.broadcast_to(recon_dirs[:, None, None, None, None], frames.shape).astype(
        np.uint8), embedding=None, flow=None)  # fmt: skip
    label = (seen + 1) % 8  # every label 45 degrees off what the ground truth's frames show
    clips = evaluate.BundleClips(np.zeros((n, 5, 3), np.float32), frames, [f"c{i}" for i in range(n)], None, label,
                                 None, None)  # fmt: skip
    out = evaluate.decoder_scores(recon, clips, direction_raft, n_permutations=500)
    assert out["direction_agreement"] == 6 / 8
    assert out["direction_acc"] == 0.0 and out["direction_acc_ground_truth"] == 0.0
    rng = np.random.default_rng(0)  # the permutation null, recomputed here
    null = np.array([(recon_dirs[rng.permutation(n)] == seen).mean() for _ in range(500)])
    assert out["direction_agreement_p"] == pytest.approx((1 + (null >= 6 / 8).sum()) / 501)
    assert out["direction_agreement_null_mean"] == pytest.approx(null.mean())
    unlabelled = evaluate.BundleClips(clips.fmri, frames, clips.captions, None, None, None, None)
    out = evaluate.decoder_scores(recon, unlabelled, direction_raft, n_permutations=500)
    assert out["direction_agreement"] == 6 / 8 and "direction_acc" not in out


def test_ablation_tests_flag_the_worse_direction_of_each_metric():
    rng = np.random.default_rng(0)
    ssim, epe = rng.uniform(0.4, 0.6, 30), rng.uniform(1, 2, 30)
    per_clip = {
        "full": {"ssim": ssim, "epe": epe},
        "no_structure": {"ssim": ssim - 0.1, "epe": epe + 0.1},
        "no_flow": {"ssim": ssim + 0.05, "epe": epe - 0.05},
    }
    tests = evaluate.ablation_tests(per_clip)
    assert tests["no_structure"]["ssim"]["worse"] and tests["no_structure"]["epe"]["worse"]
    assert tests["no_structure"]["ssim"]["mean_difference"] == pytest.approx(-0.1)
    assert tests["no_structure"]["epe"]["paired_p"] < 1e-4
    assert not tests["no_flow"]["ssim"]["worse"] and not tests["no_flow"]["epe"]["worse"]


@pytest.mark.parametrize(("n_items", "world"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_cover_every_item_once_in_order(n_items, world):
    shards = [evaluate.shard(n_items, rank, world) for rank in range(world)]
    assert [i for s in shards for i in s] == list(range(n_items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="0 <= rank < world"):
        evaluate.shard(n_items, world, world)


def test_sharded_reconstruction_equals_one_process(tiny_bundle, tmp_path):
    """Two processes (threads with a barrier standing in for Accelerate's) share the batches of one condition."""
    import threading

    from pipelines.reconstruct import VideoReconstructionPipeline

    pipeline = VideoReconstructionPipeline.from_pretrained(tiny_bundle)
    fmri = np.random.default_rng(2).normal(size=(5, 5, 24)).astype(np.float32)
    single = evaluate.reconstruct_condition(pipeline, fmri, "full", 2)
    barrier = threading.Barrier(2)

    class State:
        def __init__(self, rank):
            self.num_processes, self.process_index = 2, rank

        def wait_for_everyone(self):
            barrier.wait(timeout=60)

    results, errors = {}, []

    def work(rank):
        try:
            results[rank] = evaluate.reconstruct_condition(pipeline, fmri, "full", 2, tmp_path, "k", State(rank))
        except Exception as err:  # noqa: BLE001 (reported below, in the main thread)
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(rank,)) for rank in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for rank in range(2):
        np.testing.assert_array_equal(results[rank].frames, single.frames)
        np.testing.assert_array_equal(results[rank].flow, single.flow)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json", "full.npz"]  # the parts are gone
    with pytest.raises(ValueError, match="a folder the processes share"):
        evaluate.reconstruct_condition(pipeline, fmri, "full", 2, None, "k", State(0))


@pytest.mark.slow
def test_two_processes_under_torchrun_give_the_one_process_videos(
    tiny_bundle, small_protocol, tiny_backbones, tmp_path
):
    """``torchrun --nproc_per_node 2`` (Accelerate's multi-CPU state): each process takes its share of the batches."""
    import os
    import subprocess
    import sys

    import torch

    from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips

    out = tmp_path / "eval"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pipelines",
               "evaluate", "--bundle", str(tiny_bundle), "--protocol", str(small_protocol), "--backbones",
               str(tiny_backbones[0]), "--batch-size", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]  # `-m pipelines` runs from the repository root
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[process 2/2]" in run.stderr
    assert json.loads((out / "results.json").read_text())["n_clips"] == 4
    pipeline = VideoReconstructionPipeline.from_pretrained(tiny_bundle)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the processes ran on one thread each: compare like with like
    try:
        single = evaluate.reconstruct_condition(pipeline, load_bundle_clips(tiny_bundle).fmri, "full", 1)
    finally:
        torch.set_num_threads(threads)
    with np.load(out / "videos" / "full.npz") as gathered:
        np.testing.assert_array_equal(gathered["frames"], single.frames)


def test_all_protocols_put_mind_animator_first_and_the_shuffle_test_finds_its_protocol(
    tiny_bundle, small_protocol, tiny_backbones, tmp_path
):
    from pipelines.evaluation.protocols import PROTOCOLS

    names = evaluate.all_protocols()
    assert names[0] == "mind-animator" and sorted(names) == sorted(PROTOCOLS)
    brainnrds = dataclasses.replace(load_protocol("brainnrds"), n_frames=4, resolution=32)
    first = tmp_path / "brainnrds.yaml"
    first.write_text(yaml.safe_dump(to_dict(brainnrds)))
    argv = ["--bundle", str(tiny_bundle), "--protocol", str(first), str(small_protocol), "--backbones",
            str(tiny_backbones[0]), "--limit", "3", "--shuffle-test", "--out", str(tmp_path / "e")]  # fmt: skip
    assert evaluate.main(argv) == 0  # RAFT EPE first: the shuffle test uses the Farnebäck protocol after it
    assert json.loads((tmp_path / "e" / "results.json").read_text())["shuffle_test"]["protocol"] == "mind-animator"
