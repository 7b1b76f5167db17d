"""pipelines.data.hcp7t: clip times, row indexing (onset + HRF shift), ROI by Glasser name, scaling, splits, frames."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nibabel import cifti2

from pipelines.config import load_config, preset_path
from pipelines.data import preprocess
from pipelines.data.atlas import area_mask
from pipelines.data.cifti import CORTEX_LEFT, CORTEX_RIGHT, N_VERTICES_PER_HEMISPHERE, hcp_91k_axis, write_dtseries
from pipelines.data.hcp7t import (
    MIND_ANIMATOR_AREAS,
    MOVIE_FILES,
    HCP7TConfig,
    HCPClipConfig,
    center_crop_resize,
    clip_onsets,
    prepare_hcp7t,
    read_clip_times,
)
from pipelines.data.video import write_video

K = 100_000  # value of grayordinate g at volume t: t * K + g (exact in float32 for these sizes)
SUBJECT = "100610"
PE = {1: "AP", 2: "PA", 3: "PA", 4: "AP"}
# [start, end) frame numbers at 24 fps; blocks 2 of MOVIE1 and all of MOVIE4 start off the whole second.
BLOCKS = {
    1: [[24, 96], [130, 178], [192, 260]],
    2: [[0, 48], [72, 144], [168, 240]],
    3: [[24, 72], [96, 192], [216, 264]],
    4: [[12, 60], [84, 156], [180, 252]],
}
# Onset seconds written out by hand: floor(start / 24 + k) for k < ceil((end - start) / 24).
ONSETS = {
    1: [[1, 2, 3], [5, 6], [8, 9, 10]],
    2: [[0, 1], [3, 4, 5], [7, 8, 9]],
    3: [[1, 2], [4, 5, 6, 7], [9, 10]],
    4: [[0, 1], [3, 4, 5], [7, 8, 9]],
}
N_TRS = 16  # last onset 10 + shift 4 = volume 14
N_VIDEO_FRAMES = 264  # 11 s at 24 fps; the last clip (second 10) needs frame 10 * 24 + 21 = 261


def small_axis(reverse: bool = False) -> tuple[cifti2.BrainModelAxis, np.ndarray]:
    """Every 25th cortical grayordinate of the 91k axis; ``reverse`` puts the right hemisphere first, vertices
    descending. Returns the axis and the standard 91k index of each column."""
    std = hcp_91k_axis()
    chosen = np.flatnonzero(std.surface_mask)[::25]
    parts = []
    for name in (CORTEX_RIGHT, CORTEX_LEFT) if reverse else (CORTEX_LEFT, CORTEX_RIGHT):
        cols = chosen[std.name[chosen] == name]
        cols = cols[::-1] if reverse else cols
        parts.append((cifti2.BrainModelAxis.from_surface(std.vertex[cols], N_VERTICES_PER_HEMISPHERE, name=name), cols))
    return parts[0][0] + parts[1][0], np.concatenate([p[1] for p in parts])


N_SMALL = small_axis()[1].size


def level(index: np.ndarray) -> np.ndarray:
    """Grey level of source frame ``index`` in the fixture movies (survives H.264)."""
    return np.asarray(index) * 8 % 240 + 8


def run_data(n_trs: int, standard: np.ndarray) -> np.ndarray:
    return (np.arange(n_trs)[:, None] * K + standard[None, :]).astype(np.float32)


def make_hcp(
    root: Path,
    movies: tuple[int, ...] = (1, 2, 3, 4),
    n_trs: int = N_TRS,
    tr: float = 1.0,
    full: bool = False,
    n_video_frames: int = N_VIDEO_FRAMES,
    noise: bool = False,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Write the published layout under ``root``; return movie → (data, standard index of each column)."""
    np.save(root / "clip_times_24.npy", np.array({str(k): np.array(BLOCKS[k]) for k in BLOCKS}, dtype=object))
    frames = np.broadcast_to(
        level(np.arange(n_video_frames)).astype(np.uint8)[:, None, None, None], (n_video_frames, 24, 32, 3)
    )
    rng = np.random.default_rng(0)
    written = {}
    for k in movies:
        write_video(root / "Post_20140821_version" / MOVIE_FILES[k], frames, fps=24)
        if full:
            axis, standard = hcp_91k_axis(), np.arange(len(hcp_91k_axis()))
        else:
            axis, standard = small_axis(reverse=k == 2)
        data = run_data(n_trs, standard)
        if noise:
            data = data + rng.normal(0, K, data.shape).astype(np.float32)
        folder = root / SUBJECT / "MNINonLinear" / "Results" / f"tfMRI_MOVIE{k}_7T_{PE[k]}"
        write_dtseries(folder / f"tfMRI_MOVIE{k}_7T_{PE[k]}_Atlas_hp2000_clean.dtseries.nii", data, tr, axis)
        written[k] = (data, standard)
    return written


def small_config(**changes) -> HCP7TConfig:
    clips = HCPClipConfig(height=16, width=16, load_frames=changes.pop("load_frames", False))
    return replace(HCP7TConfig(expected_grayordinates=N_SMALL, scaling="none", clips=clips), **changes)


@pytest.fixture(scope="module")
def hcp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hcp")
    make_hcp(root)
    return root


@pytest.fixture
def copy_root(hcp_root, tmp_path) -> Path:
    """A private copy of the fixture tree that a test may damage."""
    return Path(shutil.copytree(hcp_root, tmp_path / "hcp"))


def roi_standard(standard: np.ndarray) -> np.ndarray:
    """Standard indices of the columns inside the Mind-Animator ROI, ascending."""
    return np.sort(standard[area_mask(MIND_ANIMATOR_AREAS)[standard]])


# ----------------------------------------------------------------------------------------------------------------


def test_preset_is_the_default_config():
    assert load_config(HCP7TConfig, preset_path("data", "hcp7t")) == HCP7TConfig()


def test_clip_times_format_and_onsets(hcp_root):
    blocks = read_clip_times(hcp_root / "clip_times_24.npy")
    assert sorted(blocks) == [1, 2, 3, 4]
    for k in BLOCKS:
        np.testing.assert_array_equal(blocks[k], BLOCKS[k])
        assert [o.tolist() for o in clip_onsets(blocks[k])] == ONSETS[k]
    # Clip counts of the real table: a block of 17.5 s makes 18 clips (the last one partial), as np.arange does.
    assert [len(o) for o in clip_onsets(np.array([[240, 660]]))] == [18]


def test_rows_are_clip_onset_plus_hrf_shift_and_splits_by_block(hcp_root):
    ds = prepare_hcp7t(hcp_root, small_config(), cache_dir="")
    assert ds.name == "hcp7t" and ds.tr == 1.0 and ds.clip_seconds == 1.0
    # MOVIE2's file lists the right hemisphere first with vertices descending: the map must still be right.
    np.testing.assert_array_equal(ds.voxel_grayordinates, roi_standard(small_axis()[1]))
    expected = {"train": [], "val": [], "test": []}
    for k, blocks in ONSETS.items():
        clip = 0
        for b, onsets in enumerate(blocks):
            split = "test" if b == 2 else "val" if (k, b) == (4, 1) else "train"
            for onset in onsets:
                expected[split].append((f"MOVIE{k}", clip, onset, k if b == 2 else 1))
                clip += 1
    for name, rows in expected.items():
        split = ds.splits[name]
        assert list(zip(split.run, split.clip, split.repeat, strict=True)) == [(r, c, p) for r, c, _, p in rows]
        onsets = np.array([o for _, _, o, _ in rows])
        want = (onsets[:, None] + 4) * K + ds.voxel_grayordinates[None, :]
        np.testing.assert_array_equal(split.fmri, want.astype(np.float32))
        assert split.frames is None
    assert (len(ds.splits["train"]), len(ds.splits["val"]), len(ds.splits["test"])) == (18, 3, 11)


def test_hrf_shift_and_split_counts_are_configurable(hcp_root):
    ds = prepare_hcp7t(hcp_root, small_config(hrf_shift=0, test_blocks=0, val_blocks=2, movies=(3, 1)), cache_dir="")
    assert len(ds.splits["test"]) == 0 and ds.splits["test"].fmri.shape == (0, ds.n_voxels)
    # Training blocks in order MOVIE3 b0..b2, MOVIE1 b0..b2; the last two (MOVIE1 b1, b2) validate.
    val = ds.splits["val"]
    assert val.run.tolist() == ["MOVIE1"] * 5 and val.clip.tolist() == [3, 4, 5, 6, 7]
    np.testing.assert_array_equal(val.fmri[:, 0], np.array([5, 6, 8, 9, 10]) * K + ds.voxel_grayordinates[0])
    # The final block of each run is the test–retest clip: repeat = the run's position in `movies` (MOVIE1: 2nd).
    assert val.repeat.tolist() == [1, 1, 2, 2, 2]
    train = ds.splits["train"]
    assert train.run.tolist() == ["MOVIE3"] * 8 + ["MOVIE1"] * 3
    assert train.repeat.tolist() == [1] * 11


def test_roi_is_the_named_glasser_areas_on_a_full_91k_file(tmp_path):
    make_hcp(tmp_path, movies=(1,), full=True)
    config = HCP7TConfig(movies=(1,), scaling="none", clips=HCPClipConfig(load_frames=False))
    ds = prepare_hcp7t(tmp_path, config, cache_dir="")
    mask = area_mask(list(MIND_ANIMATOR_AREAS))
    np.testing.assert_array_equal(ds.voxel_grayordinates, np.flatnonzero(mask))
    assert ds.n_voxels == 5820
    assert set(ds.extras["roi"]) == {f"{h}_{a}" for h in "LR" for a in MIND_ANIMATOR_AREAS}
    np.testing.assert_array_equal(
        ds.voxel_grayordinates[ds.extras["roi"] == "L_V1"], np.flatnonzero(area_mask(["V1"], ("L",)))
    )
    np.testing.assert_array_equal(ds.splits["train"].fmri[0], (1 + 4) * K + ds.voxel_grayordinates)


def test_roi_areas_and_hemispheres_are_configurable(hcp_root):
    ds = prepare_hcp7t(hcp_root, small_config(rois=("V1", "V4"), hemispheres=("R",)), cache_dir="")
    standard = small_axis()[1]
    np.testing.assert_array_equal(ds.voxel_grayordinates, np.sort(standard[area_mask(["V1", "V4"], ("R",))[standard]]))
    assert set(ds.extras["roi"]) == {"R_V1", "R_V4"}


def test_minmax_is_fitted_on_training_clips_only(hcp_root):
    raw = prepare_hcp7t(hcp_root, small_config(), cache_dir="")
    ds = prepare_hcp7t(hcp_root, small_config(scaling="minmax"), cache_dir="")
    train = raw.splits["train"].fmri.astype(np.float64)
    low, high = train.min(axis=0), train.max(axis=0)
    for name in ("train", "val", "test"):
        want = (raw.splits[name].fmri - low) / (high - low)
        np.testing.assert_allclose(ds.splits[name].fmri, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.splits["train"].fmri.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(ds.splits["train"].fmri.max(axis=0), 1, atol=1e-6)
    assert ds.splits["test"].fmri.max() > 1  # the test block comes last in every run
    np.testing.assert_allclose(ds.extras["minmax_min"], low)
    np.testing.assert_allclose(ds.extras["minmax_max"], high)


def test_zscore_scaling_uses_training_statistics(hcp_root):
    ds = prepare_hcp7t(hcp_root, small_config(scaling="zscore"), cache_dir="")
    train = ds.splits["train"].fmri
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-4)
    assert {"standardizer_mean", "standardizer_std"} <= set(ds.extras)


def test_detrend_and_zscore_are_applied_to_each_whole_run(tmp_path):
    written = make_hcp(tmp_path, movies=(1, 2), noise=True)
    ds = prepare_hcp7t(tmp_path, small_config(movies=(1, 2), detrend_order=2, zscore_runs=True), cache_dir="")
    for k in (1, 2):
        data, standard = written[k]
        columns = np.array([np.flatnonzero(standard == g)[0] for g in ds.voxel_grayordinates])
        run = preprocess.zscore(preprocess.polynomial_detrend(data[:, columns], 2))
        rows = np.concatenate(ONSETS[k]) + 4
        got = np.concatenate([s.fmri[s.run == f"MOVIE{k}"] for s in ds.splits.values()])
        order = np.concatenate([s.clip[s.run == f"MOVIE{k}"] for s in ds.splits.values()])
        np.testing.assert_allclose(got[np.argsort(order)], run[rows], rtol=1e-5, atol=1e-5)


def test_frames_are_every_third_frame_of_each_clip(hcp_root):
    ds = prepare_hcp7t(hcp_root, small_config(load_frames=True), cache_dir="")
    assert ds.fps == 8.0
    for split in ds.splits.values():
        assert split.frames.shape == (len(split), 8, 16, 16, 3) and split.frames.dtype == np.uint8
    test = ds.splits["test"]
    onsets = np.concatenate([ONSETS[k][2] for k in (1, 2, 3, 4)])
    want = level(onsets[:, None] * 24 + 3 * np.arange(8)[None, :])
    np.testing.assert_allclose(test.frames.mean(axis=(2, 3, 4)), want, atol=3)


def test_center_crop_resize_matches_mind_animator_geometry():
    frame = np.zeros((40, 64, 3), np.uint8)
    frame[10:30, 16:48] = 200  # the central half of each side
    out = center_crop_resize(frame, 0.5, 8, 8, keep_aspect=False)
    assert out.shape == (8, 8, 3) and out.min() == 200  # only the central region remains, squashed to a square
    wide = np.zeros((40, 64, 3), np.uint8)
    wide[:, 8:56] = 200  # dark bands at the left and right edges only
    covered = center_crop_resize(wide, 1.0, 20, 20, keep_aspect=True)
    assert covered.min() > 180  # cover + centre crop keeps the central 40 x 40: no dark band
    squashed = center_crop_resize(wide, 1.0, 20, 20, keep_aspect=False)
    assert squashed[:, 0].max() < 30 and squashed[:, 10].min() > 180  # the whole width, squashed


def test_results_are_cached_by_config_and_inputs(hcp_root, tmp_path):
    cache = tmp_path / "cache"
    first = prepare_hcp7t(hcp_root, small_config(), cache_dir=cache)
    again = prepare_hcp7t(hcp_root, small_config(), cache_dir=cache)
    assert again.key == first.key and [p.name for p in cache.iterdir()] == [f"hcp7t-{SUBJECT}-{first.key}"]
    np.testing.assert_array_equal(again.splits["test"].fmri, first.splits["test"].fmri)
    other = prepare_hcp7t(hcp_root, small_config(hrf_shift=3), cache_dir=cache)
    assert other.key != first.key


# ----------------------------------------------------------------------------------------------------------------
# Bad input: every error names the file or setting and says expected vs got.


def results(root: Path, k: int) -> Path:
    return root / SUBJECT / "MNINonLinear" / "Results" / f"tfMRI_MOVIE{k}_7T_{PE[k]}"


def test_missing_subject_and_run_folders(copy_root):
    with pytest.raises(FileNotFoundError, match=r"999999 does not exist; expected the HCP subject folder"):
        prepare_hcp7t(copy_root, small_config(subject="999999"), cache_dir="")
    shutil.rmtree(results(copy_root, 3))
    with pytest.raises(FileNotFoundError, match=r"tfMRI_MOVIE3_7T_PA does not exist; expected the MOVIE3 run"):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")


def test_run_file_must_match_exactly_once(copy_root):
    folder = results(copy_root, 2)
    original = folder / "tfMRI_MOVIE2_7T_PA_Atlas_hp2000_clean.dtseries.nii"
    shutil.copy(original, folder / "tfMRI_MOVIE2_7T_PA_Atlas_MSMAll_hp2000_clean.dtseries.nii")
    with pytest.raises(ValueError, match=r"has 2 files matching tfMRI_MOVIE2_7T_PA\*_Atlas\*.*Set fmri_glob"):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")
    ds = prepare_hcp7t(
        copy_root, small_config(fmri_glob="tfMRI_MOVIE{movie}_7T_{pe}_Atlas_hp2000_clean.dtseries.nii"), cache_dir=""
    )
    assert len(ds.splits["train"]) == 18
    for path in folder.iterdir():
        path.rename(folder / "notes.txt")
    with pytest.raises(FileNotFoundError, match=r"tfMRI_MOVIE2_7T_PA has no file matching .*found \['notes.txt'\]"):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")


def test_wrong_grayordinate_count(hcp_root):
    with pytest.raises(
        ValueError, match=rf"MOVIE1_7T_AP_Atlas_hp2000_clean.dtseries.nii has {N_SMALL} grayordinates; expected 91282"
    ):
        prepare_hcp7t(hcp_root, small_config(expected_grayordinates=91282), cache_dir="")


def test_nan_in_a_run(copy_root):
    path = results(copy_root, 3) / "tfMRI_MOVIE3_7T_PA_Atlas_hp2000_clean.dtseries.nii"
    data = run_data(N_TRS, small_axis()[1])
    data[5, 7] = np.nan
    write_dtseries(path, data, 1.0, small_axis()[0])
    with pytest.raises(ValueError, match=r"MOVIE3_7T_PA_Atlas_hp2000_clean.dtseries.nii contains 1 NaN/Inf values"):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")


def test_tr_mismatch(tmp_path):
    make_hcp(tmp_path, movies=(1,), tr=2.0)
    with pytest.raises(ValueError, match=r"dtseries.nii has TR 2 s; expected 1 s"):
        prepare_hcp7t(tmp_path, small_config(movies=(1,)), cache_dir="")


def test_clip_times_beyond_the_run(tmp_path):
    make_hcp(tmp_path, movies=(1,), n_trs=14)
    with pytest.raises(ValueError, match=r"has 14 volumes; expected at least 15: the clip at second 10 of MOVIE1"):
        prepare_hcp7t(tmp_path, small_config(movies=(1,)), cache_dir="")


def test_clip_times_beyond_the_video(tmp_path):
    make_hcp(tmp_path, movies=(1,), n_video_frames=250)
    with pytest.raises(ValueError, match=r"7T_MOVIE1_CC1_v2.mp4 has 250 frames .* expected at least 262"):
        prepare_hcp7t(tmp_path, small_config(movies=(1,), load_frames=True), cache_dir="")


def test_missing_stimulus_and_clip_times(copy_root):
    (copy_root / "Post_20140821_version" / MOVIE_FILES[4]).unlink()
    prepare_hcp7t(copy_root, small_config(), cache_dir="")  # fMRI only: the movies are not needed
    with pytest.raises(FileNotFoundError, match=r"7T_MOVIE4_HO2_v2.mp4 does not exist; expected the HCP 7T stimulus"):
        prepare_hcp7t(copy_root, small_config(load_frames=True), cache_dir="")
    (copy_root / "clip_times_24.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"clip_times_24.npy does not exist"):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (np.zeros((4, 2)), r"holds a float64 array of shape \(4, 2\); expected np.save of a dict"),
        (
            np.array({"1": BLOCKS[1], "2": BLOCKS[2]}, dtype=object),
            r"has no entry '3' \(MOVIE3\).*got keys \['1', '2'\]",
        ),
        (
            np.array({**{str(k): BLOCKS[k] for k in BLOCKS}, "2": [1, 2, 3]}, dtype=object),
            r"entry '2': expected an array of shape \(n_blocks, 2\)",
        ),
        (
            np.array({**{str(k): BLOCKS[k] for k in BLOCKS}, "4": [[0, 50], [40, 90]]}, dtype=object),
            r"entry '4': expected blocks .* not overlapping",
        ),
        (np.array(Evil(), dtype=object), r"contains a pickled builtins.print; .*restricted unpickler"),
        (np.array([[1, 2]], dtype=object), r"holds a ndarray"),
    ],
)
def test_bad_clip_times(copy_root, content, match, capsys):
    np.save(copy_root / "clip_times_24.npy", content, allow_pickle=True)
    with pytest.raises(ValueError, match=match):
        prepare_hcp7t(copy_root, small_config(), cache_dir="")
    assert "must never run" not in capsys.readouterr().out


def test_clip_times_that_is_not_npy(tmp_path):
    path = tmp_path / "clip_times_24.npy"
    path.write_bytes(pickle.dumps({"1": BLOCKS[1]}))
    with pytest.raises(ValueError, match=r"clip_times_24.npy is not a readable .npy file"):
        read_clip_times(path, (1,))


def test_unknown_roi_and_bad_config(hcp_root):
    with pytest.raises(ValueError, match=r"rois / hemispheres: 'V9' is not a Glasser HCP-MMP1.0 area"):
        prepare_hcp7t(hcp_root, small_config(rois=("V1", "V9")), cache_dir="")
    with pytest.raises(ValueError, match=r"movies: expected distinct movie numbers from 1..4, got \[1, 5\]"):
        prepare_hcp7t(hcp_root, small_config(movies=(1, 5)), cache_dir="")
    with pytest.raises(ValueError, match=r"val_blocks=8 with test_blocks=1 leaves no training block.*have 8 non-test"):
        prepare_hcp7t(hcp_root, small_config(val_blocks=8), cache_dir="")
    with pytest.raises(ValueError, match=r"clips.fps: expected a whole number of frames per 1-s clip, got fps=7.5"):
        prepare_hcp7t(hcp_root, small_config(clips=HCPClipConfig(fps=7.5)), cache_dir="")


def test_runs_must_cover_the_same_roi_grayordinates(copy_root):
    axis, standard = small_axis()
    keep = np.arange(standard.size) != np.flatnonzero(np.isin(standard, roi_standard(standard)))[0]
    sub_axis = axis[keep]
    path = results(copy_root, 4) / "tfMRI_MOVIE4_7T_AP_Atlas_hp2000_clean.dtseries.nii"
    write_dtseries(path, run_data(N_TRS, standard[keep]), 1.0, sub_axis)
    with pytest.raises(
        ValueError,
        match=r"MOVIE4_7T_AP_Atlas_hp2000_clean.dtseries.nii covers \d+ of the ROI's grayordinates; expected the same",
    ):
        prepare_hcp7t(copy_root, small_config(expected_grayordinates=None), cache_dir="")
