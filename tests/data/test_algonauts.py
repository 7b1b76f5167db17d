"""pipelines.data.algonauts: ROI files, repeat averaging, splits, first frames, bad input."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config, preset_path
from pipelines.data.algonauts import (
    Algonauts2021Config,
    AlgonautsClipConfig,
    list_videos,
    prepare_algonauts,
)
from pipelines.data.video import write_video

N_VIDEOS = 12  # with fMRI; two more videos without, as the real test videos 1001-1102
N_EXTRA = 2
N_FRAMES = 10  # frames per fixture video
VOXELS = {"V1": 5, "FFA": 3}
WB_SHAPE = (4, 5, 6)


def colour(video_index: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """RGB of frame ``frame`` of video ``video_index`` (1-based prefix): red says the video, green the frame."""
    video_index, frame = np.broadcast_arrays(video_index, frame)
    return np.stack([16 * video_index + 10, 20 * frame + 10, np.full_like(frame, 128)], axis=-1)


def make_algonauts(root: Path) -> dict[str, np.ndarray]:
    """Write the published layout; return ROI → responses of shape (N_VIDEOS, 3, n_voxels)."""
    videos = root / "AlgonautsVideos268_All_30fpsmax"
    # Prefixes without zero padding, so that numeric and alphabetical order differ (9 < 10, "10" < "9").
    for i in range(1, N_VIDEOS + N_EXTRA + 1):
        rgb = colour(i, np.arange(N_FRAMES)).astype(np.uint8)
        write_video(
            videos / f"{i}_clip-{chr(96 + i)}.mp4",
            np.broadcast_to(rgb[:, None, None, :], (N_FRAMES, 24, 24, 3)),
            fps=30,
        )
    (videos / "readme.mp4").write_bytes(b"not a numbered video")  # ignored
    rng = np.random.default_rng(1)
    responses = {}
    for protocol, (roi, n) in zip((2, 5), VOXELS.items(), strict=True):
        responses[roi] = rng.standard_normal((N_VIDEOS, 3, n)).astype(np.float32)
        write_pickle(
            root / "participants_data_v2021" / "mini_track" / "sub01" / f"{roi}.pkl",
            {"train": responses[roi]},
            protocol,
        )
    mask = np.zeros(WB_SHAPE, np.float64)
    mask.flat[rng.choice(mask.size, 7, replace=False)] = 1
    responses["WB"] = rng.standard_normal((N_VIDEOS, 3, 7))
    write_pickle(
        root / "participants_data_v2021" / "full_track" / "sub01" / "WB.pkl",
        {"train": responses["WB"], "voxel_mask": mask},
    )
    responses["WB_mask"] = mask
    return responses


def write_pickle(path: Path, obj, protocol: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def small_config(**changes) -> Algonauts2021Config:
    clips = AlgonautsClipConfig(height=16, width=16, load_frames=changes.pop("load_frames", False))
    base = Algonauts2021Config(rois=("V1", "FFA"), n_videos=N_VIDEOS, n_val=2, n_test=3, clips=clips)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def algonauts(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("algonauts")
    return root, make_algonauts(root)


@pytest.fixture
def copy_root(algonauts, tmp_path) -> Path:
    return Path(shutil.copytree(algonauts[0], tmp_path / "algonauts"))


def pkl(root: Path, roi: str) -> Path:
    return root / "participants_data_v2021" / "mini_track" / "sub01" / f"{roi}.pkl"


# ----------------------------------------------------------------------------------------------------------------


def test_preset_is_the_default_config():
    config = load_config(Algonauts2021Config, preset_path("data", "algonauts2021"))
    assert config == Algonauts2021Config()
    assert config.rois == ("V1", "V2", "V3", "V4", "LOC", "EBA", "FFA", "STS", "PPA")


def test_repeats_are_averaged_and_rois_concatenated_in_config_order(algonauts):
    root, responses = algonauts
    ds = prepare_algonauts(root, small_config(), cache_dir="")
    want = np.concatenate([responses["V1"], responses["FFA"]], axis=2).mean(axis=1)
    fmri = np.concatenate([ds.splits[s].fmri for s in ("train", "val", "test")])
    np.testing.assert_allclose(fmri, want, rtol=1e-6, atol=1e-6)
    assert ds.extras["roi"].tolist() == ["V1"] * 5 + ["FFA"] * 3
    np.testing.assert_array_equal(ds.voxel_grayordinates, -np.ones(8))
    assert all((s.repeat == 0).all() for s in ds.splits.values())
    swapped = prepare_algonauts(root, small_config(rois=("FFA", "V1")), cache_dir="")
    np.testing.assert_allclose(swapped.splits["train"].fmri[:, :3], want[:7, 5:], rtol=1e-6, atol=1e-6)


def test_splits_follow_numeric_video_order(algonauts):
    ds = prepare_algonauts(algonauts[0], small_config(), cache_dir="")
    assert ds.splits["train"].clip.tolist() == list(range(7))
    assert ds.splits["val"].clip.tolist() == [7, 8]
    assert ds.splits["test"].clip.tolist() == [9, 10, 11]
    assert ds.splits["test"].run.tolist() == ["10_clip-j", "11_clip-k", "12_clip-l"]
    assert ds.splits["train"].run[:2].tolist() == ["1_clip-a", "2_clip-b"]
    videos = list_videos(algonauts[0] / "AlgonautsVideos268_All_30fpsmax", 14)
    assert [p.name.split("_")[0] for p in videos] == [str(i) for i in range(1, 15)]


def test_separate_repeats(algonauts):
    root, responses = algonauts
    ds = prepare_algonauts(root, small_config(average_repeats=False, load_frames=True), cache_dir="")
    train = ds.splits["train"]
    assert len(train) == 7 * 3
    assert train.repeat.tolist()[:6] == [1, 2, 3, 1, 2, 3] and train.clip.tolist()[:6] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(train.fmri[4, :5], responses["V1"][1, 1])
    np.testing.assert_array_equal(train.frames[3], train.frames[5])  # the same video for every repeat


def test_first_frames_of_each_video(algonauts):
    ds = prepare_algonauts(algonauts[0], small_config(load_frames=True), cache_dir="")
    assert ds.fps == 30.0
    for split in ds.splits.values():
        assert split.frames.shape == (len(split), 8, 16, 16, 3) and split.frames.dtype == np.uint8
    test = ds.splits["test"]
    want = colour(test.clip[:, None] + 1, np.arange(8)[None, :])  # clip i is the video with prefix i + 1
    np.testing.assert_allclose(test.frames.mean(axis=(2, 3)), want, atol=6)


def test_whole_brain_track_keeps_voxel_positions(algonauts):
    root, responses = algonauts
    ds = prepare_algonauts(root, small_config(rois=("WB",)), cache_dir="")
    np.testing.assert_array_equal(ds.extras["voxel_ijk"], np.argwhere(responses["WB_mask"] == 1))
    np.testing.assert_allclose(ds.splits["val"].fmri, responses["WB"][7:9].mean(axis=1), rtol=1e-6, atol=1e-6)
    assert ds.extras["roi"].tolist() == ["WB"] * 7


def test_standardize_uses_training_statistics(algonauts):
    ds = prepare_algonauts(algonauts[0], small_config(standardize=True), cache_dir="")
    np.testing.assert_allclose(ds.splits["train"].fmri.mean(axis=0), 0, atol=1e-5)
    assert {"standardizer_mean", "standardizer_std"} <= set(ds.extras)


def test_results_are_cached(algonauts, tmp_path):
    first = prepare_algonauts(algonauts[0], small_config(), cache_dir=tmp_path)
    again = prepare_algonauts(algonauts[0], small_config(), cache_dir=tmp_path)
    assert again.key == first.key and [p.name for p in tmp_path.iterdir()] == [f"algonauts2021-sub01-{first.key}"]
    assert prepare_algonauts(algonauts[0], small_config(n_val=1), cache_dir=tmp_path).key != first.key


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_unknown_or_mixed_rois(algonauts):
    with pytest.raises(ValueError, match=r"rois: expected some of \['V1', .*got \['V1', 'V5'\] \(unknown: \['V5'\]\)"):
        prepare_algonauts(algonauts[0], small_config(rois=("V1", "V5")), cache_dir="")
    with pytest.raises(ValueError, match=r"WB \(full track, whole brain\) already contains the mini-track ROIs"):
        prepare_algonauts(algonauts[0], small_config(rois=("WB", "V1")), cache_dir="")


def test_missing_folders_and_files(copy_root):
    with pytest.raises(FileNotFoundError, match=r"mini_track/sub11 does not exist; found subjects \['sub01'\]"):
        prepare_algonauts(copy_root, small_config(subject="sub11"), cache_dir="")
    with pytest.raises(FileNotFoundError, match=r"sub01/V2.pkl does not exist; expected the V2 responses of sub01"):
        prepare_algonauts(copy_root, small_config(rois=("V1", "V2")), cache_dir="")
    shutil.rmtree(copy_root / "AlgonautsVideos268_All_30fpsmax")
    with pytest.raises(
        FileNotFoundError, match=r"AlgonautsVideos268_All_30fpsmax does not exist; expected the Algonauts"
    ):
        prepare_algonauts(copy_root, small_config(), cache_dir="")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([1, 2, 3], r"V1.pkl: expected a dict with key 'train' .*got list"),
        ({"test": np.zeros((12, 3, 5))}, r"V1.pkl: expected a dict with key 'train'.*got a dict with keys \['test'\]"),
        (
            {"train": np.zeros((12, 5))},
            r"V1.pkl: expected 'train' of shape \(12, n_repeats, n_voxels\).*got an array of shape \(12, 5\)",
        ),
        (
            {"train": np.zeros((11, 3, 5))},
            r"V1.pkl: expected 'train' of shape \(12, .*got an array of shape \(11, 3, 5\)",
        ),
        ({"train": np.full((12, 3, 5), np.nan)}, r"V1.pkl contains 180 NaN/Inf values in 'train' \(first at video 0"),
        ({"train": np.zeros((12, 2, 5))}, r"FFA.pkl has 3 repeats per video; expected 2 as in .*V1.pkl"),
        ({"train": np.array([["a"] * 5] * 3 * 12).reshape(12, 3, 5)}, r"V1.pkl: expected numeric 'train' responses"),
    ],
)
def test_bad_pkl_contents(copy_root, content, match):
    write_pickle(pkl(copy_root, "V1"), content)
    with pytest.raises(ValueError, match=match):
        prepare_algonauts(copy_root, small_config(), cache_dir="")


def test_bad_whole_brain_mask(copy_root):
    path = copy_root / "participants_data_v2021" / "full_track" / "sub01" / "WB.pkl"
    write_pickle(path, {"train": np.zeros((12, 3, 7)), "voxel_mask": np.ones(WB_SHAPE)})
    with pytest.raises(ValueError, match=r"WB.pkl: 'voxel_mask' marks 120 voxels; expected 7"):
        prepare_algonauts(copy_root, small_config(rois=("WB",)), cache_dir="")
    write_pickle(path, {"train": np.zeros((12, 3, 7))})
    with pytest.raises(ValueError, match=r"WB.pkl: expected 'voxel_mask', a 3-D array \(x, y, z\), got 'NoneType'"):
        prepare_algonauts(copy_root, small_config(rois=("WB",)), cache_dir="")


def test_bad_videos(copy_root):
    videos = copy_root / "AlgonautsVideos268_All_30fpsmax"
    with pytest.raises(ValueError, match=r"has 14 videos named NNNN_\*.mp4; expected at least n_videos=20"):
        prepare_algonauts(copy_root, small_config(n_videos=20), cache_dir="")
    with pytest.raises(ValueError, match=r"1_clip-a.mp4 has 10 frames; expected at least clips.n_frames=12"):
        prepare_algonauts(
            copy_root, small_config(load_frames=True, clips=AlgonautsClipConfig(n_frames=12)), cache_dir=""
        )
    shutil.copy(videos / "3_clip-c.mp4", videos / "03_copy.mp4")
    with pytest.raises(ValueError, match=r"two videos numbered 3: .*expected one file per numeric prefix"):
        prepare_algonauts(copy_root, small_config(), cache_dir="")


def test_split_sizes_must_leave_training_videos(algonauts):
    with pytest.raises(ValueError, match=r"n_val=5 and n_test=7: expected non-negative counts .*n_videos=12"):
        prepare_algonauts(algonauts[0], small_config(n_val=5, n_test=7), cache_dir="")
