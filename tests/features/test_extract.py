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
