"""pipelines.evaluation.harness with stand-in backbones whose outputs are known (the metrics are tested alone)."""

import dataclasses

import numpy as np
import pytest

from pipelines.evaluation.harness import (
    EvaluationBackbones,
    evaluate_videos,
    iter_clips,
    measure,
    needed_roles,
    sample_clips,
    summarize,
)
from pipelines.evaluation.protocols import load_protocol

W = np.random.default_rng(0).normal(size=(3, 12))


@dataclasses.dataclass
class MeanColour:
    """Stand-in CLIP: a frame's embedding is its mean colour plus a constant."""

    name: str = "fake:clip"

    def encode_image(self, frames):
        return frames.mean(axis=(1, 2)) / 255.0 + 0.1


@dataclasses.dataclass
class ColourClassifier:
    """Stand-in classifier: logits are a fixed projection of the mean colour (of a frame, or of a clip)."""

    n_classes: int = 12
    name: str = "fake:classifier"

    def logits(self, frames):
        axes = tuple(range(1, frames.ndim - 1))
        return frames.mean(axis=axes) / 255.0 @ W[:, : self.n_classes]


@dataclasses.dataclass
class BrightnessFlow:
    """Stand-in RAFT: a constant rightward flow of 8 px x the first frame's mean brightness; records its pairs."""

    name: str = "fake:raft"
    calls: list = dataclasses.field(default_factory=list)

    def __call__(self, first, second):
        self.calls.append((first.copy(), second.copy()))
        flow = np.zeros((*first.shape[:3], 2), np.float32)
        flow[..., 0] = first.mean(axis=(1, 2, 3))[:, None, None] / 255.0 * 8
        return flow


def videos(n_clips=4, n_frames=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_clips, n_frames, size, size, 3), dtype=np.uint8)


def backbones(**kwargs):
    clip = MeanColour()  # VIFI's model is the CLIP here, as in the demo tier
    roles = {"clip": clip, "vifi": clip, "frame_classifier": ColourClassifier(), "video_classifier": ColourClassifier()}
    return EvaluationBackbones(tier="test", **{**roles, **kwargs})


def small(name, **changes):
    return dataclasses.replace(load_protocol(name), **{"resolution": 32, "n_way_trials": 20, **changes})


@pytest.mark.parametrize("name", ["mind-animator", "mindvideo", "neuroclips"])
def test_the_ground_truth_scores_the_ceiling(name):
    protocol = small(name)
    target = videos(n_frames=protocol.n_frames)
    summary, values = evaluate_videos([(target, target)], protocol, backbones(), progress=False)
    assert set(summary) == set(protocol.metrics)
    expected = {"ssim": 1.0, "psnr": 100.0, "hue_pcc": 1.0, "vifi": 1.0, "epe": 0.0, "2way_i": 1.0, "2way_v": 1.0}
    for metric, value in expected.items():
        if metric in protocol.metrics:
            assert summary[metric]["mean"] == pytest.approx(value), metric
    assert values["ssim"].shape == (4, protocol.n_frames)


def test_fifty_way_with_twelve_classes_is_reported_unavailable():
    protocol = small("mindvideo")
    target = videos(n_frames=6)
    summary, _ = evaluate_videos([(target, target)], protocol, backbones(), progress=False)
    assert summary["50way_i"]["mean"] is None and summary["50way_i"]["chance"] == pytest.approx(3 / 52)
    assert summary["50way_v"]["unavailable"] == "50-way needs a classifier with >= 52 classes; this one has 12"
    assert summary["2way_i"]["chance"] == 0.75 and summary["2way_i"]["n_clips"] == 4


def test_gated_clip_pcc_uses_vifi_even_when_vifi_is_not_listed():
    protocol = small("mind-animator", metrics=("clip_pcc",), clip_pcc_gate=0.999)
    target = videos(n_frames=8) // 4
    target[..., 0] += 180  # reddish ground truth, bluish reconstruction: VIFI below the gate → CLIP-PCC 0
    predicted = target[..., ::-1].copy()
    values = measure(predicted, target, protocol, backbones())
    assert set(values) == {"clip_pcc"} and values["clip_pcc"].tolist() == [0.0] * 4
    assert (measure(target, target, protocol, backbones())["clip_pcc"] > 0.9).all()


def test_raft_epe_uses_strided_pairs_and_the_flow_grid():
    flow = BrightnessFlow()
    protocol = small("brainnrds", metrics=("epe",), resolution=16)  # flows on a 32 x 32 grid: scaled by 32 / 16
    target = videos(n_clips=2, n_frames=8, size=16)
    predicted = np.clip(target.astype(int) + 20, 0, 255).astype(np.uint8)
    values = measure(predicted, target, protocol, backbones(raft=flow))
    first_pred, second_pred = flow.calls[0]
    np.testing.assert_array_equal(first_pred, predicted[:, [0, 2, 4]].reshape(-1, 16, 16, 3))
    np.testing.assert_array_equal(second_pred, predicted[:, [2, 4, 6]].reshape(-1, 16, 16, 3))
    brightness = lambda v: v[:, [0, 2, 4]].mean(axis=(2, 3, 4)) / 255 * 8 * 2  # noqa: E731  (x 32 / 16)
    expected = np.abs(brightness(predicted.astype(float)) - brightness(target.astype(float))).mean(axis=1)
    np.testing.assert_allclose(values["epe"], expected, rtol=1e-5)


def test_farneback_epe_with_a_stride_compares_frames_two_apart():
    protocol = small("mind-animator", metrics=("epe",), resolution=48, flow_stride=2)
    from tests.evaluation.test_metrics import translating_video

    moving = translating_video(1, 0, n_frames=8, size=48)[None]
    still = np.repeat(moving[:, :1], 8, axis=1)
    epe = measure(still, moving, protocol, backbones())["epe"][0]
    assert 1.6 < epe < 2.2  # about 2 px (1 px per frame, flows 2 frames apart), less at the borders


def test_summarize_frame_position_averaging_by_hand():
    values = {"ssim": np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])}  # 3 clips x 2 frame positions
    by_position = summarize(values, small("mindvideo", metrics=("ssim",)))["ssim"]
    assert by_position["mean"] == pytest.approx(1.0) and by_position["std"] == pytest.approx(np.std([0, 1, 2]) / 2)
    by_clip = summarize(values, small("mind-animator", metrics=("ssim",)))["ssim"]
    assert by_clip["std"] == pytest.approx(np.std([0.5, 1.0, 1.5])) and by_clip["n_clips"] == 3


def test_batching_does_not_change_the_results():
    protocol = small("mindvideo")
    target, predicted = videos(n_clips=6), videos(n_clips=6, seed=1)
    whole, _ = evaluate_videos([(predicted, target)], protocol, backbones(), progress=False)
    parts, _ = evaluate_videos(
        zip(iter_clips(predicted, 4), iter_clips(target, 4), strict=True), protocol, backbones(), progress=False
    )
    assert whole == parts


def test_needed_roles():
    assert needed_roles(load_protocol("mind-animator")) == ["clip", "vifi", "frame_classifier", "video_classifier"]
    assert needed_roles(load_protocol("brainnrds")) == ["clip", "raft"]
    assert needed_roles(load_protocol("mindvideo", ["metrics=[ssim]"])) == []


def test_sample_clips():
    clips = np.arange(2 * 32).reshape(2, 32)[..., None, None, None]
    sampled = sample_clips(clips, 16.0, load_protocol("mindvideo"))
    assert sampled[0].ravel().tolist() == [0, 5, 10, 16, 21, 26]


def test_harness_errors():
    protocol = small("mind-animator")
    target = videos(n_frames=6)
    with pytest.raises(ValueError, match=r"target: protocol 'mind-animator' compares 8 frames per clip, got 6"):
        measure(target, target, protocol, backbones())
    target = videos(n_frames=8)
    with pytest.raises(
        ValueError, match=r"backbones: protocol 'mind-animator' \(ssim, psnr, .*\) needs \['clip'\], which"
    ):
        measure(target, target, protocol, backbones(clip=None))
    with pytest.raises(ValueError, match=r"needs \['frame_classifier', 'video_classifier'\], which are not loaded"):
        measure(target, target, protocol, backbones(frame_classifier=None, video_classifier=None))
    with pytest.raises(ValueError, match=r"backbones: protocol 'brainnrds' \(epe\) needs \['raft'\]"):
        measure(target, target, small("brainnrds", metrics=("epe",)), backbones())
    with pytest.raises(ValueError, match=r"batches: expected at least one \(predicted, target\) batch, got none"):
        evaluate_videos([], protocol, backbones(), progress=False)
