"""The pretraining corpus: deterministic, sampled like the reader's clips, cached, and never the subject's movies."""

import numpy as np
import pytest

from pipelines.data.twin.stimuli import RunRenderer, StimulusConfig, plan_run
from pipelines.data.video import resize_center_crop
from pipelines.training.backbones.corpus import build_corpus

STIMULUS = StimulusConfig(height=32, width=32, fps=8, background_size=64, scene_clips_min=2, scene_clips_max=3)


def test_clips_are_the_renderer_frames_sampled_like_the_reader(tmp_path):
    corpus = build_corpus(STIMULUS, 2, 4, clip_fps=2.0, size=(16, 16), seed=5, cache_dir=None, workers=1)
    assert corpus["frames"].shape == (8, 4, 16, 16, 3) and corpus["frames"].dtype == np.uint8
    assert corpus["caption"].shape == corpus["category_id"].shape == corpus["direction_bin"].shape == (8,)
    # run 1 is plan_run under the corpus' own stream; frames 0, 4, 8, 12 of each 16-frame clip (2 of 8 fps)
    plan = plan_run(4, STIMULUS, np.random.default_rng(np.random.SeedSequence(5, spawn_key=(9, 1))))
    movie = RunRenderer(plan, STIMULUS).frames(16 * 2, 16 * 3)  # its third clip
    expected = np.stack([resize_center_crop(movie[k], 16, 16) for k in (0, 4, 8, 12)])
    np.testing.assert_array_equal(corpus["frames"][4 + 2], expected)
    assert corpus["caption"][6] == plan[2]["caption"] and corpus["category_id"][6] == plan[2]["category_id"]


def test_the_corpus_is_cached_and_deterministic(tmp_path):
    first = build_corpus(STIMULUS, 1, 3, 2.0, (16, 16), seed=0, cache_dir=tmp_path, workers=1)
    (folder,) = tmp_path.glob("corpus-*")  # one cache entry, each array a finished .npy, nothing half-written
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted(f"{n}_train.npy" for n in first)
    again = build_corpus(STIMULUS, 1, 3, 2.0, (16, 16), seed=0, cache_dir=tmp_path, workers=1)  # from the cache
    fresh = build_corpus(STIMULUS, 1, 3, 2.0, (16, 16), seed=0, cache_dir=None, workers=1)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        np.testing.assert_array_equal(first[name], fresh[name])
    other = build_corpus(STIMULUS, 1, 3, 2.0, (16, 16), seed=1, cache_dir=tmp_path, workers=1)
    assert not np.array_equal(other["frames"], first["frames"]) and len(list(tmp_path.glob("corpus-*"))) == 2


def test_no_corpus_movie_is_one_of_the_subjects(tiny_twin):
    from pipelines.data.twin import groundtruth

    meta = groundtruth.load_meta(tiny_twin)
    stimulus = StimulusConfig(**meta["config"]["stimulus"])
    corpus = build_corpus(stimulus, 2, meta["config"]["n_movie_trs"], 4.0, (16, 16), seed=meta["seed"], workers=1)
    # captions can coincide by chance; whole movies (the caption sequence) must not
    plans = [groundtruth.load_plan(tiny_twin, run["name"]) for run in meta["runs"]]
    sequences = {tuple(c["caption"] for c in plan) for plan in plans}
    n = meta["config"]["n_movie_trs"]
    assert len(sequences) == len(meta["runs"]) >= 2
    assert all(tuple(corpus["caption"][i * n : (i + 1) * n]) not in sequences for i in range(2))


@pytest.mark.parametrize(
    ("n_runs", "clips", "fps", "match"),
    [
        (0, 3, 2.0, "expected n_runs >= 1 and clips_per_run >= 1, got 0 and 3"),
        (1, 0, 2.0, "expected n_runs >= 1 and clips_per_run >= 1, got 1 and 0"),
        (1, 3, 0.1, "clip_fps 0.1 gives no frame in a 2.0-s clip; expected at least 1"),
    ],
)
def test_bad_arguments(n_runs, clips, fps, match):
    with pytest.raises(ValueError, match=match):
        build_corpus(STIMULUS, n_runs, clips, fps, (16, 16), workers=1)
