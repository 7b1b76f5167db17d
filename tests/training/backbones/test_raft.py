"""The demo RAFT trainer: TV-L1's convention, exact augmentation, cuts skipped, loss falls, saved model loads."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from skimage import data as skdata

from pipelines.config import load_config, preset_path
from pipelines.data.twin import groundtruth
from pipelines.features import demo_tier
from pipelines.features.backbones import load_backbone
from pipelines.training.backbones.config import BackboneTrainingConfig
from pipelines.training.backbones.raft import (
    FlowPairs,
    clip_geometry,
    collect_pairs,
    end_point_error,
    evaluate_raft,
    movie_frames,
    pair_batches,
    sequence_loss,
    train_raft,
    training_pairs,
    tvl1_flow,
)
from tests.features.conftest import TINY

TINY_LOOP = load_config(BackboneTrainingConfig, preset_path("backbones", "train_tiny")).raft
SHIFT = (2, -1)  # dx (rightwards), dy (downwards) in pixels


# RAFT's many small ops run several times faster on one thread than on two busy cores (tests share them)
pytestmark = pytest.mark.usefixtures("one_thread")


def shifted_texture(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A natural textured image and the same image with its content moved by SHIFT (np.roll: no interpolation)."""
    first = skdata.astronaut()[100 : 100 + size, 150 : 150 + size]
    second = np.roll(first, shift=(SHIFT[1], SHIFT[0]), axis=(0, 1))
    return first[None], second[None]


def test_tvl1_gives_the_forward_flow_in_dx_dy_order():
    first, second = shifted_texture()
    flow = tvl1_flow(first, second)
    assert flow.shape == (1, 128, 128, 2) and flow.dtype == np.float32
    interior = flow[:, 8:-8, 8:-8]  # np.roll wraps the borders around
    np.testing.assert_allclose(interior.reshape(-1, 2).mean(axis=0), SHIFT, atol=0.05)
    assert end_point_error(interior, np.broadcast_to(np.float32(SHIFT), interior.shape)) < 0.1


def test_end_point_error_and_sequence_loss_match_their_definitions():
    target = np.zeros((1, 2, 2, 2), np.float32)
    flow = target.copy()
    flow[0, 0, 0] = (3, 4)  # one pixel of four is 5 px off
    assert end_point_error(flow, target) == pytest.approx(1.25)
    with pytest.raises(ValueError, match=r"flow: expected the target's shape \(1, 2, 2, 2\), got \(1, 2, 2\)"):
        end_point_error(flow[..., 0], target)
    t = torch.zeros(1, 2, 4, 4)
    predictions = [t + 1.0, t + 0.5, t - 0.25]  # mean |error| 1, 0.5, 0.25 for iterations 0, 1, 2
    assert float(sequence_loss(predictions, t)) == pytest.approx(0.64 * 1 + 0.8 * 0.5 + 0.25)


def test_augmented_batches_keep_the_flow_exact():
    first, second = shifted_texture()
    flow = np.broadcast_to(np.float16(SHIFT), (1, 128, 128, 2)).copy()
    pairs = FlowPairs(first, second, flow, np.array(["seg1"]), np.array([0]), np.array([1]))
    seen = set()
    for seed in range(8):
        a, b, target = pair_batches(pairs, 4)(np.random.default_rng(seed))
        assert a.shape == b.shape == (4, 3, 128, 128) and target.shape == (4, 2, 128, 128)
        assert -1 <= float(a.min()) and float(a.max()) <= 1
        for i in range(4):
            dx, dy = (int(v) for v in target[i, :, 0, 0])
            assert torch.all(target[i, 0] == dx) and torch.all(target[i, 1] == dy) and (abs(dx), abs(dy)) == (2, 1)
            seen.add((dx, dy))
            # the second frame is still the first moved by the target flow (flips and photometric changes included)
            moved = torch.roll(a[i], shifts=(dy, dx), dims=(1, 2))
            torch.testing.assert_close(b[i, :, 8:-8, 8:-8], moved[:, 8:-8, 8:-8])
    assert seen == {(2, -1), (-2, -1), (2, 1), (-2, 1)}  # every flip combination occurred


def test_relative_crops_move_the_second_frame_by_the_change_in_target():
    first, second = shifted_texture()
    flow = np.broadcast_to(np.float16(SHIFT), (1, 128, 128, 2)).copy()
    pairs = FlowPairs(first, second, flow, np.array(["seg1"]), np.array([0]), np.array([1]))
    a, b, target = pair_batches(pairs, 16, max_shift=4)(np.random.default_rng(0))
    assert a.shape == b.shape == (16, 3, 120, 120) and target.shape == (16, 2, 120, 120)  # 128 - 2 * 4, multiple of 8
    shifts = set()
    for i in range(16):
        dx, dy = (int(v) for v in target[i, :, 0, 0])
        assert torch.all(target[i, 0] == dx) and torch.all(target[i, 1] == dy)
        assert abs(dx) <= 2 + 4 and abs(dy) <= 1 + 4
        shifts.add((dx, dy))
        moved = torch.roll(a[i], shifts=(dy, dx), dims=(1, 2))  # content at p in a is at p + target in b
        torch.testing.assert_close(b[i, :, 8:-8, 8:-8], moved[:, 8:-8, 8:-8])
    assert len(shifts) > 8  # the crops vary the motion
    with pytest.raises(ValueError, match=r"max_shift: expected at most 60 for a \(128, 128\) grid, got 61"):
        pair_batches(pairs, 2, max_shift=61)


def test_degraded_pairs_are_the_clip_size_frames_resized_up():
    first, second = shifted_texture()
    flow = np.broadcast_to(np.float16(SHIFT), (1, 128, 128, 2)).copy()
    pairs = FlowPairs(first, second, flow, np.array(["seg1"]), np.array([0]), np.array([1]))
    sharp = pair_batches(pairs, 64, augment=True)(np.random.default_rng(3))
    mixed = pair_batches(pairs, 64, augment=True, degrade_size=(32, 32))(np.random.default_rng(3))
    torch.testing.assert_close(mixed[2], sharp[2])  # the target never changes
    changed = (mixed[0] - sharp[0]).abs().flatten(1).amax(dim=1) > 1e-3
    assert 0.2 < float(changed.float().mean()) < 0.8  # about DEGRADE_PROBABILITY of the pairs
    # a degraded frame has no detail beyond the clip size: resizing it down and up again changes little
    down_up = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(mixed[0][changed], size=(32, 32), mode="bilinear", antialias=True),
        size=(128, 128), mode="bilinear",
    )  # fmt: skip
    assert float((down_up - mixed[0][changed]).abs().mean()) < 0.5 * float((sharp[0] - mixed[0]).abs()[changed].mean())


def scene_cuts(root, run: str) -> set[int]:
    """Frames t whose successor starts a new scene, and the last frame, read from the simulator's clip plan."""
    plan = groundtruth.load_plan(root, run)
    per_clip = plan[0]["frames_per_clip"]
    n_frames = len(plan) * per_clip
    return {c["clip"] * per_clip - 1 for c in plan if c["scene_start"] and c["clip"] > 0} | {n_frames - 1}


def test_cut_frames_never_enter_the_pairs(tiny_data):
    root, run = tiny_data.root, "seg1"
    n_frames = movie_frames(root, run)
    cuts = scene_cuts(root, run)
    assert len(cuts) >= 2  # the tiny plan has scene cuts inside the run, not only the last frame
    pairs = collect_pairs(root, [(run, t, 1) for t in range(n_frames)])
    assert set(pairs.frame.tolist()) == set(range(n_frames)) - cuts
    assert np.isfinite(pairs.flow).all() and pairs.first.shape == (len(pairs), 64, 64, 3)
    # pairs are (t, t + 1): the second frame of t is the first frame of t + 1 when both are kept
    follows = np.flatnonzero(np.diff(pairs.frame) == 1)
    np.testing.assert_array_equal(pairs.second[follows], pairs.first[follows + 1])


def test_pairs_several_frames_apart_skip_every_cut_between_them(tiny_data):
    root, run = tiny_data.root, "seg1"
    n_frames, cuts = movie_frames(root, run), scene_cuts(root, run)
    pairs = collect_pairs(root, [(run, t, 3) for t in range(n_frames)], size=(32, 32))
    assert set(pairs.frame.tolist()) == {t for t in range(n_frames - 3) if not cuts & {t, t + 1, t + 2}}
    assert pairs.first.shape[1:] == (32, 32, 3) and pairs.flow.shape[1:] == (32, 32, 2)  # flow on the frames' grid
    assert (pairs.step == 3).all()
    follows = np.flatnonzero(np.diff(pairs.frame) == 3)  # frame t + 3 is the first frame of the pair at t + 3
    np.testing.assert_array_equal(pairs.second[follows], pairs.first[follows + 1])
    np.testing.assert_allclose(pairs.flow[0], groundtruth.exact_flow(root, run, int(pairs.frame[0]), 32, 32, step=3))


def test_clip_geometry_is_how_the_reader_samples_clips(tiny_data, monkeypatch):
    from pipelines.training.backbones import raft

    step, size = clip_geometry(tiny_data, "seg1")
    movie_fps = raft.probe_video(tiny_data.root / "stimuli" / "seg1.mp4").fps
    assert step * tiny_data.dataset.fps == movie_fps and size == tiny_data.frames("train").shape[2:4]
    uneven = dataclasses.replace(tiny_data, dataset=dataclasses.replace(tiny_data.dataset, fps=movie_fps / 2.5))
    with pytest.raises(ValueError, match=r"seg1.mp4: expected a frame rate that is a whole multiple of the clips'"):
        clip_geometry(uneven, "seg1")


def test_training_pairs_have_the_exact_flow_on_raft_grid(tiny_data):
    root = tiny_data.root
    pairs = training_pairs(root, ["seg1", "seg2"], max_pairs_per_run=12, max_step=3)
    assert len(pairs) <= 24 and set(pairs.run.tolist()) == {"seg1", "seg2"}
    assert set(pairs.step.tolist()) == {1, 2, 3}
    margin = training_pairs(root, ["seg1"], max_pairs_per_run=2, margin=4)
    assert margin.flow.shape[1:] == (136, 136, 2)  # room for relative crops of 4 pixels back to RAFT's 128
    assert pairs.first.shape[1:] == (64, 64, 3) and pairs.flow.shape[1:] == (128, 128, 2)  # RAFT's minimum input
    assert not set(pairs.frame[pairs.run == "seg1"].tolist()) & scene_cuts(root, "seg1")
    # the flow on the 128 grid, averaged over 2 x 2 cells, is twice the movie-size flow (exact up to object edges)
    for i in range(3):
        run, t, step = pairs.run[i], int(pairs.frame[i]), int(pairs.step[i])
        coarse = pairs.flow[i].astype(np.float32).reshape(64, 2, 64, 2, 2).mean(axis=(1, 3)) / 2
        assert np.median(np.abs(coarse - groundtruth.exact_flow(root, run, t, step=step))) < 0.01


def test_overfitting_one_batch_lowers_the_loss():
    first, second = shifted_texture()
    flow = np.broadcast_to(np.float16(SHIFT), (1, 128, 128, 2)).copy()
    batch = pair_batches(
        FlowPairs(first, second, flow, np.array(["seg1"]), np.array([0]), np.array([1])), 2, augment=False
    )(np.random.default_rng(0))
    torch.manual_seed(0)
    model = demo_tier.build_raft().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    losses = []
    for _ in range(15):
        loss = sequence_loss(model(batch[0], batch[1], num_flow_updates=2), batch[2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("raft")
    summary = train_raft(tiny_data, TINY, TINY_LOOP, root / "backbones", root / "work", max_pairs_per_run=16)
    return root, summary


def test_train_saves_what_load_backbone_reads(trained, tiny_data):
    root, summary = trained
    history = json.loads((root / "work" / "state.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 4]
    assert summary["best_score"] == pytest.approx(min(h["score"] for h in history))
    assert summary["train_flow_updates"] == TINY.raft.num_flow_updates == 2  # never more than at inference
    assert 0 < summary["n_train_pairs"] <= 16 * 3 and summary["n_val_pairs"] == 48
    step, size = clip_geometry(tiny_data, "seg1")
    assert summary["pair_step"] == step and summary["train_steps"] == [1, 2 * step] and summary["pair_size"] == [*size]
    meta = json.loads((root / "backbones" / "raft" / "meta.json").read_text())
    assert meta["role"] == "raft" and meta["data_key"] == tiny_data.dataset.key
    assert {"steps", "best_step", "best_score", "seconds"} <= set(meta)
    estimator = load_backbone("raft", "demo", root / "backbones")
    assert estimator.num_flow_updates == 2
    frames = tiny_data.split("test").frames[0]
    assert estimator(frames[:2], frames[1:3]).shape == (2, 64, 64, 2)


def test_evaluate_returns_the_documented_scores(trained, tiny_data):
    root, _ = trained
    scores = evaluate_raft(tiny_data, root / "backbones", n_pairs=6)
    assert set(scores) == {"raft_epe", "tvl1_epe", "zero_flow_epe", "n_pairs", "raft_pair_step", "raft_pair_size"}
    assert scores["n_pairs"] == 6 and scores["raft_pair_step"] == clip_geometry(tiny_data, "test1")[0]
    assert all(np.isfinite(scores[k]) and scores[k] >= 0 for k in ("raft_epe", "tvl1_epe", "zero_flow_epe"))
    assert scores["tvl1_epe"] < scores["zero_flow_epe"]  # an independent estimator beats no motion
    assert evaluate_raft(tiny_data, root / "backbones", n_pairs=6) == scores  # seeded


def test_errors_are_explained(trained, tiny_data, tmp_path):
    root, _ = trained
    with pytest.raises(ValueError, match="n_pairs: expected an int >= 1, got 0"):
        evaluate_raft(tiny_data, root / "backbones", n_pairs=0)
    with pytest.raises(ValueError, match=r"n_pairs: expected at most \d+ \(the pairs of \['test1', 'test2'\]"):
        evaluate_raft(tiny_data, root / "backbones", n_pairs=10**6)
    with pytest.raises(FileNotFoundError, match="raft does not exist"):
        evaluate_raft(tiny_data, tmp_path, n_pairs=4)
    real = dataclasses.replace(tiny_data, root=tmp_path)  # a dataset without the simulator's ground truth
    with pytest.raises(FileNotFoundError, match="expected a simulated subject"):
        train_raft(real, TINY, TINY_LOOP, tmp_path / "backbones", tmp_path / "work")
    with pytest.raises(FileNotFoundError, match="expected a simulated subject"):
        evaluate_raft(real, root / "backbones")
    with pytest.raises(ValueError, match="max_pairs_per_run: expected None or an int >= 1, got 0"):
        train_raft(tiny_data, TINY, TINY_LOOP, tmp_path / "backbones", tmp_path / "work", max_pairs_per_run=0)
