"""The CC2017 reader on a fixture in the real Wen 2018 layout, checked against a hand computation.

The fixture has the real file names, 245-volume training runs and test1, a 246-volume test2, 2 training repeats
and 3 test repeats, and a grayordinate axis with a subcortical structure *before* the cortex, so taking the cortex
from a hard-coded slice would read the wrong columns. Leading and trailing volumes hold huge values, so any
trimming mistake shows. The expected values are recomputed here step by step with numpy.polyfit and scipy.stats,
independently of pipelines.data.preprocess.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from pipelines.data import cc2017, cifti
from pipelines.data.video import write_video
from tests.data.test_cifti import small_axis

N_MOVIE = 240
CORTEX = slice(2, 7)  # columns of the 5 cortical vertices in small_axis(): after 2 thalamus voxels
CONFIG = cc2017.CC2017Config(
    expected_grayordinates=7,
    n_val_segments=1,
    test_repeats=3,
    selection=cc2017.SelectionConfig(rule="top_n", n_voxels=3),
    hrf=cc2017.HRFConfig(mode="shift", shift=2),
    clips=cc2017.ClipConfig(fps=1.0, height=16, width=16),
)
RUNS = {"seg1": (245, 2), "seg2": (245, 2), "seg3": (245, 2), "test1": (245, 3), "test2": (246, 3)}


def grey(second: np.ndarray, run_index: int) -> np.ndarray:
    return ((second + 17 * run_index) % 60 * 4 + 8).astype(np.uint8)


def write_fixture(root, seed=0, test_scale=1.0, tr=2.0) -> dict[str, list[np.ndarray]]:
    """Write the layout; return the raw (n_volumes, 7) array of every repeat file by run."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((len(RUNS), N_MOVIE, 5)) * np.array([2.0, 1.5, 0.0, 1.0, 0.0])  # reliable: 0, 1, 3
    raw = {}
    for i, (run, (n_volumes, n_repeats)) in enumerate(RUNS.items()):
        seconds = np.arange(2 * N_MOVIE)
        frames = np.broadcast_to(grey(seconds, i)[:, None, None, None], (len(seconds), 16, 16, 3))
        write_video(root / "stimuli" / f"{run}.mp4", np.ascontiguousarray(frames), fps=1)
        lead = n_volumes - N_MOVIE - 4
        raw[run] = []
        for r in range(1, n_repeats + 1):
            data = np.full((n_volumes, 7), 1e4)  # non-movie volumes: huge, so wrong trimming shows
            t = np.linspace(0, 1, N_MOVIE)[:, None]
            movie = 1000 + 40 * t - 25 * t**3 + shared[i] + rng.standard_normal((N_MOVIE, 5))
            if run.startswith("test"):
                movie = movie * test_scale
            data[lead : lead + N_MOVIE, CORTEX] = movie
            data[lead : lead + N_MOVIE, :2] = rng.standard_normal((N_MOVIE, 2))
            path = root / "subject1" / "fmri" / run / "cifti" / f"{run}_{r}_Atlas.dtseries.nii"
            cifti.write_dtseries(path, data, tr=tr, axis=small_axis())
            raw[run].append(data.astype(np.float32).astype(np.float64))  # what the file holds
    return raw


def reference(raw: dict[str, list[np.ndarray]]) -> dict:
    """The published preprocessing, written out by hand."""
    t = np.linspace(0, 1, N_MOVIE)

    def per_run(data):
        lead = data.shape[0] - N_MOVIE - 4  # 245 → 1, 246 → 2
        x = data[lead : lead + N_MOVIE, CORTEX]
        x = np.stack([x[:, j] - np.polyval(np.polyfit(t, x[:, j], 4), t) for j in range(5)], axis=1)
        return stats.zscore(x, axis=0)

    runs = {name: [per_run(d) for d in reps] for name, reps in raw.items()}
    z = [np.arctanh([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(5)]) for a, b in (runs["seg1"], runs["seg2"])]
    tstat = stats.ttest_1samp(np.array(z), 0, axis=0, alternative="greater").statistic
    selected = np.sort(np.argsort(-tstat)[:3])
    avg = {name: np.mean(reps, axis=0)[:, selected] for name, reps in runs.items()}
    rows = {name: avg[name][2:] for name in avg}  # shift 2: clip j ↔ volume j + 2, clips 0..237
    train = np.concatenate([rows["seg1"], rows["seg2"]])
    mean, std = train.mean(0), train.std(0)
    return {
        "selected": selected,
        "train": (train - mean) / std,
        "val": (rows["seg3"] - mean) / std,
        "test": (np.concatenate([rows["test1"], rows["test2"]]) - mean) / std,
        "t": tstat,
    }


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc2017")
    return root, write_fixture(root)


def test_exact_preprocessing_against_hand_computation(fixture):
    root, raw = fixture
    ds = cc2017.prepare_cc2017(root, CONFIG, cache_dir="")
    ref = reference(raw)
    np.testing.assert_array_equal(ds.extras["selected_cortex_index"], ref["selected"])
    np.testing.assert_array_equal(ref["selected"], [0, 1, 3])  # the reliable vertices of the fixture
    np.testing.assert_allclose(ds.extras["reliability_t"], ref["t"], rtol=1e-4)
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(ds.splits[split].fmri, ref[split], atol=2e-4, err_msg=split)
    train = ds.splits["train"]
    assert list(dict.fromkeys(train.run)) == ["seg1", "seg2"] and set(ds.splits["val"].run) == {"seg3"}
    np.testing.assert_array_equal(train.clip[:238], np.arange(238))
    assert (train.repeat == 0).all() and len(ds.splits["test"]) == 2 * 238
    # voxel -> grayordinate map: standard HCP 91k indices of the selected cortical vertices.
    np.testing.assert_array_equal(ds.voxel_grayordinates, np.array([0, 5, 9, 29697, 29698])[ref["selected"]])
    assert ds.n_voxels == 3


def test_trimming_per_run_length(fixture):
    root, raw = fixture
    config = dataclasses.replace(CONFIG, detrend_order=0)
    train_runs, test_runs = cc2017.discover_runs(root, config)
    runs = {r.name: r for r in train_runs + test_runs}
    for name, lead in (("seg1", 1), ("test1", 1), ("test2", 2)):
        data, columns, _ = cc2017.load_run(runs[name].repeats[0], runs[name], config)
        np.testing.assert_array_equal(columns, np.arange(2, 7))
        np.testing.assert_allclose(data, stats.zscore(raw[name][0][lead : lead + 240, CORTEX], axis=0), atol=1e-4)


def test_clip_frames_follow_the_movie(fixture):
    root, _ = fixture
    ds = cc2017.prepare_cc2017(root, CONFIG, cache_dir="")
    train = ds.splits["train"]
    assert train.frames.shape == (len(train), 2, 16, 16, 3)
    for k in (0, 100, 237, 238 + 5):
        run_index = list(RUNS).index(train.run[k])
        expected = grey(np.array([2 * train.clip[k], 2 * train.clip[k] + 1]), run_index)
        np.testing.assert_allclose(train.frames[k, :, 8, 8, 0], expected, atol=2)


def test_test_data_never_reaches_fitted_statistics(tmp_path, fixture):
    root, raw = fixture
    other = tmp_path / "scaled"
    write_fixture(other, seed=0, test_scale=100.0)  # identical training data, test runs x100
    a = cc2017.prepare_cc2017(root, CONFIG, cache_dir="")
    b = cc2017.prepare_cc2017(other, CONFIG, cache_dir="")
    for key in ("selected_cortex_index", "reliability_t", "standardizer_mean", "standardizer_std"):
        np.testing.assert_array_equal(a.extras[key], b.extras[key], err_msg=key)
    np.testing.assert_array_equal(a.splits["train"].fmri, b.splits["train"].fmri)
    np.testing.assert_array_equal(a.splits["val"].fmri, b.splits["val"].fmri)


def test_validation_segment_takes_no_part_in_selection(tmp_path, fixture):
    root, raw = fixture
    ds = cc2017.prepare_cc2017(root, CONFIG, cache_dir="")
    seg3 = root / "subject1" / "fmri" / "seg3" / "cifti"
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy)
    for r in (1, 2):
        data = raw["seg3"][r - 1].copy()
        data[1:241, CORTEX] = np.random.default_rng(r).standard_normal((240, 5)) * 3 + 1000
        cifti.write_dtseries(copy / seg3.relative_to(root) / f"seg3_{r}_Atlas.dtseries.nii", data, 2.0, small_axis())
    other = cc2017.prepare_cc2017(copy, CONFIG, cache_dir="")
    np.testing.assert_array_equal(ds.extras["selected_cortex_index"], other.extras["selected_cortex_index"])
    np.testing.assert_array_equal(ds.extras["standardizer_mean"], other.extras["standardizer_mean"])


def test_separate_repeats_and_window(fixture):
    root, _ = fixture
    config = dataclasses.replace(
        CONFIG, train_repeat_mode="separate", hrf=cc2017.HRFConfig(mode="window", shift=0, before=2, after=2)
    )
    ds = cc2017.prepare_cc2017(root, config, cache_dir="")
    train = ds.splits["train"]
    assert train.fmri.shape == (2 * 2 * 236, 5, 3)
    np.testing.assert_array_equal(np.unique(train.repeat), [1, 2])
    assert (ds.splits["test"].repeat == 0).all() and ds.splits["test"].fmri.shape == (2 * 236, 5, 3)


def test_cache_is_reused_and_keyed_by_inputs(tmp_path, fixture, monkeypatch):
    root, _ = fixture
    cache = tmp_path / "cache"
    first = cc2017.prepare_cc2017(root, CONFIG, cache_dir=cache)
    monkeypatch.setattr(cc2017, "_build", lambda *a: pytest.fail("rebuilt although cached"))
    again = cc2017.prepare_cc2017(root, CONFIG, cache_dir=cache)
    np.testing.assert_array_equal(first.splits["test"].fmri, again.splits["test"].fmri)
    np.testing.assert_array_equal(first.splits["train"].frames, again.splits["train"].frames)
    assert again.key == first.key and again.config == first.config
    with pytest.raises(pytest.fail.Exception):  # a changed config has another key: rebuilt
        cc2017.prepare_cc2017(root, dataclasses.replace(CONFIG, detrend_order=3), cache_dir=cache)


# --- bad input: each names the file, what was expected and what was found --------------------------------------


@pytest.fixture
def layout(tmp_path):
    write_fixture(tmp_path)
    return tmp_path


def run_file(root, run, r):
    return root / "subject1" / "fmri" / run / "cifti" / f"{run}_{r}_Atlas.dtseries.nii"


def test_wrong_grayordinate_count(layout):
    with pytest.raises(
        ValueError, match=r"seg1_1_Atlas.dtseries.nii has 7 grayordinates; expected 91282 \(HCP fsLR-32k"
    ):
        cc2017.prepare_cc2017(layout, dataclasses.replace(CONFIG, expected_grayordinates=91282), cache_dir="")


def test_nan_values(layout):
    data = np.ones((245, 7))
    data[10, 3] = np.inf
    cifti.write_dtseries(run_file(layout, "seg2", 2), data, 2.0, small_axis())
    with pytest.raises(ValueError, match=r"seg2_2_Atlas.dtseries.nii contains 1 NaN/Inf values \(first at volume 10"):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_too_few_volumes(layout):
    cifti.write_dtseries(run_file(layout, "test2", 1), np.ones((244, 7)), 2.0, small_axis())
    with pytest.raises(
        ValueError,
        match=r"test2_1_Atlas.dtseries.nii has 244 volumes; expected 245 or 246: its movie test2.mp4 lasts 240 TRs",
    ):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_missing_repeat(layout):
    run_file(layout, "seg3", 2).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"seg3_2_Atlas.dtseries.nii does not exist: expected repeats 1..2 of seg3, found \[1\]"
    ):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")
    ds = cc2017.prepare_cc2017(layout, dataclasses.replace(CONFIG, exclude=("seg3_2",)), cache_dir="")
    assert len(ds.splits["val"]) == 238  # the excluded repeat is left out, the rest is read


def test_missing_test_repeat_in_the_middle(layout):
    run_file(layout, "test1", 2).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"test1_2_Atlas.dtseries.nii does not exist: expected repeats 1..3 of test1"
    ):
        cc2017.prepare_cc2017(layout, dataclasses.replace(CONFIG, test_repeats=None), cache_dir="")


def test_unreadable_movie(layout):
    (layout / "stimuli" / "seg2.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match=r"seg2.mp4 is not a readable video: expected an mp4"):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_tr_disagrees_with_config(layout):
    cifti.write_dtseries(run_file(layout, "test1", 3), np.ones((245, 7)), 0.72, small_axis())
    with pytest.raises(ValueError, match=r"test1_3_Atlas.dtseries.nii has TR 0.72 s; expected 2 s"):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_not_cifti(layout):
    nib.Nifti1Image(np.zeros((4, 4, 4, 245), np.float32), np.eye(4)).to_filename(run_file(layout, "seg1", 1))
    with pytest.raises(
        ValueError,
        match=r"seg1_1_Atlas.dtseries.nii is not a CIFTI-2 file: expected a \*.dtseries.nii dense time series, found a Nifti1Image",
    ):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_missing_folders_and_subject(tmp_path, layout):
    with pytest.raises(FileNotFoundError, match=r"stimuli does not exist; expected the CC2017 layout"):
        cc2017.prepare_cc2017(tmp_path / "nowhere", CONFIG, cache_dir="")
    with pytest.raises(FileNotFoundError, match=r"subject2/fmri does not exist; found subjects \['subject1'\]"):
        cc2017.prepare_cc2017(layout, dataclasses.replace(CONFIG, subject=2), cache_dir="")
    import shutil

    shutil.rmtree(layout / "subject1" / "fmri" / "test2")
    with pytest.raises(FileNotFoundError, match=r"test2/cifti does not exist; expected the fMRI of stimulus test2.mp4"):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")


def test_too_many_validation_segments(layout):
    with pytest.raises(
        ValueError, match=r"n_val_segments: expected 0..1 \(selection needs >= 2 training segments\), got 2"
    ):
        cc2017.prepare_cc2017(layout, dataclasses.replace(CONFIG, n_val_segments=2), cache_dir="")


def test_no_validation_segments(fixture):
    root, _ = fixture
    ds = cc2017.prepare_cc2017(root, dataclasses.replace(CONFIG, n_val_segments=0), cache_dir="")
    assert len(ds.splits["val"]) == 0 and ds.splits["val"].fmri.shape == (0, 3)
    assert ds.splits["val"].frames.shape == (0, 2, 16, 16, 3)
    assert len(ds.splits["train"]) == 3 * 238


def test_runs_on_different_axes_are_rejected(layout):
    swapped = small_axis(subcortex_first=False)  # same vertices, cortex in other columns
    cifti.write_dtseries(run_file(layout, "test1", 2), np.ones((245, 7)), 2.0, swapped)
    with pytest.raises(ValueError, match=r"test1_2_Atlas.dtseries.nii has a different cortical grayordinate layout"):
        cc2017.prepare_cc2017(layout, CONFIG, cache_dir="")
