"""pipelines.features.extract on the tiny simulated subject with tiny random demo-tier backbones."""

import numpy as np
import pytest

from pipelines.config import load_config, preset_path
from pipelines.data.cc2017 import CC2017Config, prepare_cc2017
from pipelines.data.twin import groundtruth
from pipelines.features import extract
from pipelines.features.backbones import load_backbone


@pytest.fixture(scope="module")
def dataset(tiny_twin, tmp_path_factory):
    config = load_config(CC2017Config, preset_path("data", "cc2017"))
    return prepare_cc2017(tiny_twin, config, cache_dir=tmp_path_factory.mktemp("prep"))


def test_features_have_the_documented_shapes(dataset, tiny_backbones, tmp_path):
    root, _ = tiny_backbones
    cache = extract.FeatureCache(tmp_path)
    val = dataset.splits["val"]
    n = len(val)
    clip = load_backbone("clip", "demo", root)
    assert extract.extract(dataset, "val", "clip_image", clip, cache).shape == (n, 8, 16)
    vae = load_backbone("vae", "demo", root)
    assert extract.extract(dataset, "val", "vae_latent", vae, cache).shape == (n, 8, 4, 16, 16)
    classifier = load_backbone("frame_classifier", "demo", root)
    assert extract.extract(dataset, "val", "frame_logits", classifier, cache).shape == (n, 8, 3)
    video = load_backbone("video_classifier", "demo", root)
    assert extract.classifier_features(val, video, video=True).shape == (n, 3)
    flow = load_backbone("raft", "demo", root)
    sub = extract.Split(val.fmri[:2], val.run[:2], val.clip[:2], val.repeat[:2], val.frames[:2])
    assert extract.flow_features(sub, flow, grid=32).shape == (2, 7, 32, 32, 2)


def test_cache_is_keyed_and_reused(dataset, tiny_backbones, tmp_path, monkeypatch):
    root, _ = tiny_backbones
    cache = extract.FeatureCache(tmp_path)
    clip = load_backbone("clip", "demo", root)
    first = extract.extract(dataset, "val", "clip_image", clip, cache)
    path = cache.path(dataset.key, clip.name, "clip_image", "val")
    assert path.is_file() and dataset.key in str(path)
    monkeypatch.setitem(extract.FEATURES, "clip_image", lambda *a, **k: pytest.fail("recomputed although cached"))
    np.testing.assert_array_equal(extract.extract(dataset, "val", "clip_image", clip, cache), first)
    with pytest.raises(
        ValueError, match=r"feature: expected one of \['caption', 'clip_image', 'flow', 'frame_logits', 'vae_latent'\]"
    ):
        extract.extract(dataset, "val", "depth", clip, cache)
    with pytest.raises(ValueError, match=r"split: expected one of \['test', 'train', 'val'\], got 'dev'"):
        extract.extract(dataset, "dev", "clip_image", clip, cache)


def test_text_features_and_simulated_labels(dataset, tiny_twin, tiny_backbones):
    root, _ = tiny_backbones
    labels = extract.simulated_labels(tiny_twin, dataset.splits["test"])
    test = dataset.splits["test"]
    plan = groundtruth.load_plan(tiny_twin, str(test.run[0]))
    assert labels["caption"][0] == plan[int(test.clip[0])]["caption"]
    assert labels["category_id"].shape == (len(test),) and labels["direction_bin"].max() <= 7
    clip = load_backbone("clip", "demo", root)
    text = extract.clip_text_features(list(labels["caption"][:5]), clip, batch_size=2)
    assert text.shape == (5, 16)


def test_no_frames_and_empty_inputs(dataset, tiny_backbones):
    root, _ = tiny_backbones
    clip = load_backbone("clip", "demo", root)
    val = dataset.splits["val"]
    bare = extract.Split(val.fmri, val.run, val.clip, val.repeat, None)
    with pytest.raises(ValueError, match="has no frames; prepare the dataset with clips.load_frames: true"):
        extract.clip_image_features(bare, clip)
    with pytest.raises(ValueError, match="CLIP texts: expected at least one item, got an empty array"):
        extract.clip_text_features([], clip)


class FakeCaptioner:
    """Describes a frame by its mean brightness; has a name like a real backbone."""

    name = "fake:captioner"

    def __call__(self, frames):
        return [f"a frame of brightness {int(f.mean())}" for f in frames]


def test_captions_are_computed_once_and_cached_as_text(dataset, tmp_path):
    cache = extract.FeatureCache(tmp_path)
    val = dataset.splits["val"]
    captions = extract.extract(dataset, "val", "caption", FakeCaptioner(), cache, frame_index=0)
    assert captions.shape == (len(val),) and captions.dtype.kind == "U"
    assert captions[3] == f"a frame of brightness {int(val.frames[3, 0].mean())}"
    path = cache.path(dataset.key, "fake:captioner", "caption-frame_index0", "val")
    assert path.is_file()
    with pytest.raises(ValueError, match=r"frame_index: expected 0..7, got 9"):
        extract.caption_features(val, FakeCaptioner(), frame_index=9)


class PairRecorder:
    """Stands in for RAFT: records the frame pairs it is given (frames are filled with 10 x clip + frame index) and
    returns a flow whose dx is the first frame's index and dy the second's."""

    name = "fake:pairs"

    def __init__(self):
        self.pairs = []

    def __call__(self, first, second):
        a, b = first[:, 0, 0, 0].astype(int), second[:, 0, 0, 0].astype(int)
        self.pairs.extend(zip(a.tolist(), b.tolist(), strict=True))
        flow = np.zeros((*first.shape[:3], 2), np.float32)
        flow[..., 0], flow[..., 1] = (a % 10)[:, None, None], (b % 10)[:, None, None]
        return flow


def labelled_split(n_clips=3, n_frames=8, size=4):
    """A split whose frame t of clip c is filled with the value 10 c + t."""
    values = 10 * np.arange(n_clips)[:, None] + np.arange(n_frames)
    frames = np.broadcast_to(values[:, :, None, None, None], (n_clips, n_frames, size, size, 3)).astype(np.uint8)
    index = np.arange(n_clips)
    return extract.Split(np.zeros((n_clips, 5)), np.array(["seg1"] * n_clips), index, index, frames.copy())


@pytest.mark.parametrize(
    ("n_frames", "stride", "starts"),
    [(8, 1, [0, 1, 2, 3, 4, 5, 6]), (8, 2, [0, 2, 4]), (8, 3, [0, 3]), (8, 7, [0]), (7, 2, [0, 2, 4]), (6, 4, [0])],
)
def test_flow_pairs_are_stride_frames_apart_within_each_clip(n_frames, stride, starts):
    estimator = PairRecorder()
    flows = extract.flow_features(labelled_split(n_frames=n_frames), estimator, stride=stride, batch_size=2)
    assert len(starts) == (n_frames - 1) // stride  # the documented count
    assert flows.shape == (3, len(starts), 4, 4, 2) and flows.dtype == np.float32
    expected = [(10 * c + s, 10 * c + s + stride) for c in range(3) for s in starts]
    assert estimator.pairs == expected  # in clip order, never across clips, batches of 2 pairs notwithstanding
    for c in range(3):
        np.testing.assert_array_equal(flows[c, :, 0, 0, 0], starts)  # flow k of clip c is of pair k
        np.testing.assert_array_equal(flows[c, :, 0, 0, 1], np.array(starts) + stride)


def test_flow_stride_one_is_the_default():
    a, b = PairRecorder(), PairRecorder()
    np.testing.assert_array_equal(
        extract.flow_features(labelled_split(), a), extract.flow_features(labelled_split(), b, stride=1)
    )
    assert a.pairs == b.pairs and len(a.pairs) == 3 * 7


def test_flow_stride_with_a_grid():
    flows = extract.flow_features(labelled_split(size=8), PairRecorder(), grid=2, stride=2)
    assert flows.shape == (3, 3, 2, 2, 2)
    # resampled to 2 x 2 pixels from 8 x 8: the flow, in grid pixels, shrinks by 4
    np.testing.assert_allclose(flows[0, :, 0, 0, 1], np.array([2, 4, 6]) / 4)


@pytest.mark.parametrize("stride", [0, -1, 8, 9, 2.0, True])
def test_flow_stride_must_fit_the_clip(stride):
    with pytest.raises(
        ValueError, match=rf"stride: expected an integer in \[1, 7\] for clips of 8 frames, got {stride!r}\."
    ):
        extract.flow_features(labelled_split(), PairRecorder(), stride=stride)


def test_flow_stride_is_part_of_the_cache_key(dataset, tmp_path):
    cache = extract.FeatureCache(tmp_path)
    one = extract.extract(dataset, "val", "flow", PairRecorder(), cache, grid=2)
    two = extract.extract(dataset, "val", "flow", PairRecorder(), cache, grid=2, stride=2)
    assert one.shape[1] == 7 and two.shape[1] == 3
    assert cache.path(dataset.key, "fake:pairs", "flow-grid2-stride2", "val").is_file()
    assert cache.path(dataset.key, "fake:pairs", "flow-grid2", "val").is_file()
