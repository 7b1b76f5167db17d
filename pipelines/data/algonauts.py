"""Reader for the Algonauts Project 2021 challenge data (Mind-Animator, shared/reference/methods_and_protocols.md B.7).

Layout (Algonauts 2021 devkit, ``utils/helper.py::make_path`` and ``perform_encoding.py::get_fmri``)::

    AlgonautsVideos268_All_30fpsmax/NNNN_*.mp4           1102 3-s videos; the first 1000 (by NNNN) have fMRI
    participants_data_v2021/mini_track/sub01..sub10/{V1,V2,V3,V4,LOC,EBA,FFA,STS,PPA}.pkl
    participants_data_v2021/full_track/sub01..sub10/WB.pkl

Each mini-track pkl holds a dict ``{"train": array of shape (1000, 3, n_voxels)}`` (videos x repeats x voxels of
that ROI); the full-track ``WB.pkl`` adds ``"voxel_mask"``, a 3-D array whose non-zero entries (in C order) are the
whole-brain voxels. The devkit averages the repeats (``np.mean(data["train"], axis=1)``). Voxels are volumetric
and have no surface mapping, so ``voxel_grayordinates`` is -1 everywhere. Mini-track ROIs are concatenated in the
configured order; they may share voxels (the files do not say which), so do not mix overlapping ROIs if that
matters.

Mind-Animator uses the first 8 consecutive frames of each video, resized to 512 x 512. Neither its code nor its
paper specifies a train/test split within the 1000 videos; the default here holds out the last 100 for testing and
the 100 before them for validation (the devkit's own validation example uses videos 901-1000).

The pkl files are read with a restricted unpickler (:func:`load_pickle`) that only rebuilds numpy arrays, dtypes
and scalars and builtin containers; any other class in a file is an error, never imported or called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipelines.config import config_hash, to_dict
from pipelines.data import preprocess, video
from pipelines.data.dataset import SPLITS, PreparedDataset, Split, cached, files_fingerprint
from pipelines.data.safe_pickle import load_pickle

ROI_NAMES = ("V1", "V2", "V3", "V4", "LOC", "EBA", "FFA", "STS", "PPA")  # mini track
WHOLE_BRAIN = "WB"  # full track
VIDEO_SECONDS = 3.0
NOMINAL_FPS = 30.0  # "30fpsmax": the frame rate reported when frames are not decoded
_VIDEO_NAME = re.compile(r"^(\d+)_.*\.mp4$")

# --------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class AlgonautsClipConfig:
    """Frames taken from each video."""

    n_frames: int = 8  # first consecutive frames of each video (Mind-Animator: 8)
    height: int = 512  # frame height after resize + centre crop (Mind-Animator: 512)
    width: int = 512  # frame width after resize + centre crop (Mind-Animator: 512)
    load_frames: bool = True  # decode the videos (false: fMRI only, much faster)


@dataclass(frozen=True)
class Algonauts2021Config:
    """Configuration of the Algonauts 2021 reader; see the module docstring for what is published."""

    subject: str = "sub01"  # participant folder, sub01 .. sub10
    rois: tuple[str, ...] = ROI_NAMES  # mini-track ROI files concatenated in this order, or ["WB"] (full track)
    n_videos: int = 1000  # videos with fMRI: the first n by numeric prefix; every pkl must have this many rows
    average_repeats: bool = True  # mean of the repeats (devkit); false: one sample per repeat (repeat = 1, 2, 3)
    n_val: int = 100  # videos before the test videos held out for validation (not specified by the paper)
    n_test: int = 100  # last videos held out for testing (not specified by the paper)
    standardize: bool = False  # per-voxel z-score fitted on training samples (the data are used as delivered)
    video_dir: str = "AlgonautsVideos268_All_30fpsmax"  # video folder, relative to the data root
    fmri_dir: str = "participants_data_v2021"  # fMRI folder, relative to the data root
    clips: AlgonautsClipConfig = field(default_factory=AlgonautsClipConfig)


# --------------------------------------------------------------------------------------------------------------
# Inputs


def list_videos(video_dir: str | Path, n_videos: int) -> list[Path]:
    """The first ``n_videos`` files ``NNNN_*.mp4`` of ``video_dir``, sorted by their numeric prefix NNNN.

    Files whose names do not start with digits and an underscore are ignored.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it holds fewer than ``n_videos`` such files, or two share a prefix.
    """
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise FileNotFoundError(
            f"{video_dir} does not exist; expected the Algonauts 2021 videos (NNNN_*.mp4) there. Check the data "
            "root and video_dir in the config."
        )
    numbered: dict[int, Path] = {}
    for path in video_dir.glob("*.mp4"):
        match = _VIDEO_NAME.match(path.name)
        if not match:
            continue
        number = int(match.group(1))
        if number in numbered:
            raise ValueError(
                f"{video_dir} has two videos numbered {number}: {numbered[number].name} and {path.name}; "
                "expected one file per numeric prefix. Remove the duplicate."
            )
        numbered[number] = path
    if len(numbered) < n_videos:
        raise ValueError(
            f"{video_dir} has {len(numbered)} videos named NNNN_*.mp4; expected at least n_videos={n_videos} "
            "(the Algonauts 2021 release has 1102, of which the first 1000 have fMRI)."
        )
    return [numbered[k] for k in sorted(numbered)[:n_videos]]


def roi_files(fmri_dir: str | Path, subject: str, rois: tuple[str, ...]) -> list[Path]:
    """Paths of the ROI pkl files: ``{fmri_dir}/{mini_track|full_track}/{subject}/{roi}.pkl``.

    Raises
    ------
    ValueError
        If an ROI name is unknown, repeated, or WB is combined with mini-track ROIs.
    FileNotFoundError
        If the subject folder or a file is missing.
    """
    known = (*ROI_NAMES, WHOLE_BRAIN)
    unknown = [r for r in rois if r not in known]
    if unknown or not rois:
        raise ValueError(f"rois: expected some of {list(ROI_NAMES)} or ['WB'], got {list(rois)} (unknown: {unknown}).")
    if len(set(rois)) != len(rois):
        raise ValueError(f"rois: expected each ROI once, got {list(rois)}.")
    if WHOLE_BRAIN in rois and len(rois) > 1:
        raise ValueError(
            f"rois: WB (full track, whole brain) already contains the mini-track ROIs; expected ['WB'] alone, "
            f"got {list(rois)}."
        )
    track = "full_track" if rois == (WHOLE_BRAIN,) else "mini_track"
    subject_dir = Path(fmri_dir) / track / subject
    if not subject_dir.is_dir():
        present = sorted(p.name for p in subject_dir.parent.glob("sub*")) if subject_dir.parent.is_dir() else []
        raise FileNotFoundError(
            f"{subject_dir} does not exist; found subjects {present}. Check the data root, fmri_dir and subject."
        )
    paths = [subject_dir / f"{roi}.pkl" for roi in rois]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; expected the {path.stem} responses of {subject}.")
    return paths


def read_roi(path: str | Path, n_videos: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one Algonauts 2021 pkl and check its contents.

    Parameters
    ----------
    path : str or Path
        A ``{ROI}.pkl`` (mini track) or ``WB.pkl`` (full track) file.
    n_videos : int
        Required number of videos (rows).

    Returns
    -------
    train : array of shape (n_videos, n_repeats, n_voxels), float32
    voxel_mask : array of shape (x, y, z), bool, or None
        The whole-brain voxel mask of ``WB.pkl``; None for mini-track files.

    Raises
    ------
    ValueError
        If the file is not a dict with a finite ``"train"`` array of that shape (and a matching ``"voxel_mask"``
        for WB), or contains anything but numpy arrays and builtin containers.
    """
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, dict) or "train" not in data:
        got = f"a dict with keys {sorted(map(str, data))}" if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path}: expected a dict with key 'train' (array of shape (n_videos, n_repeats, n_voxels)), got {got}."
        )
    train = data["train"]
    if not isinstance(train, np.ndarray) or train.ndim != 3 or train.shape[0] != n_videos or 0 in train.shape:
        got = f"an array of shape {train.shape}" if isinstance(train, np.ndarray) else type(train).__name__
        raise ValueError(
            f"{path}: expected 'train' of shape ({n_videos}, n_repeats, n_voxels) (videos x repeats x voxels), "
            f"got {got}. Check n_videos in the config and that this is an Algonauts 2021 file."
        )
    if not np.issubdtype(train.dtype, np.number):
        raise ValueError(f"{path}: expected numeric 'train' responses, got dtype {train.dtype}.")
    bad = ~np.isfinite(train)
    if bad.any():
        video_index, repeat, voxel = np.argwhere(bad)[0]
        raise ValueError(
            f"{path} contains {int(bad.sum())} NaN/Inf values in 'train' (first at video {video_index}, repeat "
            f"{repeat}, voxel {voxel}); expected finite responses everywhere."
        )
    mask = None
    if path.stem == WHOLE_BRAIN:
        mask = data.get("voxel_mask")
        if not isinstance(mask, np.ndarray) or mask.ndim != 3:
            got = f"shape {mask.shape}" if isinstance(mask, np.ndarray) else repr(type(mask).__name__)
            raise ValueError(f"{path}: expected 'voxel_mask', a 3-D array (x, y, z), got {got}.")
        mask = mask != 0
        if int(mask.sum()) != train.shape[2]:
            raise ValueError(
                f"{path}: 'voxel_mask' marks {int(mask.sum())} voxels; expected {train.shape[2]}, one per column of "
                "'train'."
            )
    return train.astype(np.float32), mask


# --------------------------------------------------------------------------------------------------------------
# Reader


def prepare_algonauts(
    root: str | Path, config: Algonauts2021Config | None = None, cache_dir: str | Path | None = None
) -> PreparedDataset:
    """Read the Algonauts 2021 videos and one subject's fMRI, or load them from the cache.

    Samples are videos (one response estimate per 3-s video, not volumes): video i (0-based, in numeric-prefix
    order) is ``clip = i`` with ``run`` = the video's file stem. Videos ``n_videos - n_test ..`` form the test split,
    the ``n_val`` before them the validation split, the rest the training split.

    Parameters
    ----------
    root : str or Path
        The folder holding ``AlgonautsVideos268_All_30fpsmax/`` and ``participants_data_v2021/``.
    config : Algonauts2021Config, optional
    cache_dir : str or Path, optional
        Cache root (default ``$MINDREEL_CACHE`` or ``~/.cache/mindreel``); ``""`` disables caching.

    Returns
    -------
    PreparedDataset
        Splits "train", "val", "test"; each split's ``fmri`` is an array of shape (n_samples, n_voxels) (n_samples
        = videos, or videos x repeats without averaging) and ``frames`` an array of shape (n_samples, n_frames,
        height, width, 3), uint8. ``voxel_grayordinates`` is -1 (volumetric voxels). ``extras["roi"]`` names the
        ROI of each voxel; ``extras["voxel_ijk"]`` (WB only) is an array of shape (n_voxels, 3) with each voxel's
        position in the volume of ``voxel_mask``; ``standardizer_mean`` / ``standardizer_std`` when standardising.

    Raises
    ------
    FileNotFoundError
        If a folder or file is missing.
    ValueError
        If a file has the wrong contents or the config is inconsistent with the data.
    """
    config = config or Algonauts2021Config()
    root = Path(root)
    _check_config(config)
    pkl_paths = roi_files(root / config.fmri_dir, config.subject, config.rois)
    videos = list_videos(root / config.video_dir, config.n_videos)
    key = config_hash(config, files_fingerprint(pkl_paths + videos))
    return cached(lambda: _build(pkl_paths, videos, config, key), key, f"algonauts2021-{config.subject}", cache_dir)


def _check_config(config: Algonauts2021Config) -> None:
    if config.n_val < 0 or config.n_test < 0 or config.n_val + config.n_test >= config.n_videos:
        raise ValueError(
            f"n_val={config.n_val} and n_test={config.n_test}: expected non-negative counts that leave training "
            f"videos out of n_videos={config.n_videos}."
        )
    c = config.clips
    if c.n_frames < 1 or c.height < 1 or c.width < 1:
        raise ValueError(f"clips: expected n_frames, height and width >= 1, got {c.n_frames}, {c.height}, {c.width}.")


def _build(pkl_paths: list[Path], videos: list[Path], config: Algonauts2021Config, key: str) -> PreparedDataset:
    # 1. Responses of every ROI, checked against each other.
    blocks, labels, mask = [], [], None
    for path in pkl_paths:
        train, roi_mask = read_roi(path, config.n_videos)
        if blocks and train.shape[1] != blocks[0].shape[1]:
            raise ValueError(
                f"{path} has {train.shape[1]} repeats per video; expected {blocks[0].shape[1]} as in {pkl_paths[0]}."
            )
        blocks.append(train)
        labels.append(np.full(train.shape[2], path.stem))
        mask = roi_mask if roi_mask is not None else mask
    responses = np.concatenate(blocks, axis=2)  # (n_videos, n_repeats, n_voxels)
    n_repeats = responses.shape[1]

    # 2. Samples: one per video (repeats averaged) or one per video and repeat.
    if config.average_repeats:
        fmri, clip, repeat = responses.mean(axis=1), np.arange(config.n_videos), np.zeros(config.n_videos, np.int64)
    else:
        fmri = responses.reshape(-1, responses.shape[2])
        clip = np.repeat(np.arange(config.n_videos), n_repeats)
        repeat = np.tile(np.arange(1, n_repeats + 1), config.n_videos)
    fmri = fmri.astype(np.float32)

    # 3. Split by video index.
    first_val = config.n_videos - config.n_test - config.n_val
    first_test = config.n_videos - config.n_test
    split_of = np.where(clip >= first_test, 2, np.where(clip >= first_val, 1, 0))
    stems = np.array([p.stem for p in videos])
    splits = {}
    for k, name in enumerate(SPLITS):
        rows = split_of == k
        splits[name] = Split(fmri=fmri[rows], run=stems[clip[rows]], clip=clip[rows], repeat=repeat[rows])

    # 4. Optional standardisation with training statistics.
    extras: dict[str, np.ndarray] = {"roi": np.concatenate(labels)}
    if mask is not None:
        extras["voxel_ijk"] = np.argwhere(mask).astype(np.int64)  # C order, as the devkit fills voxel_mask == 1
    if config.standardize:
        scaler = preprocess.Standardizer.fit(splits["train"].fmri)
        for split in splits.values():
            split.fmri = scaler.transform(split.fmri)
        extras |= {"standardizer_mean": scaler.mean, "standardizer_std": scaler.std}

    # 5. The first frames of every video.
    fps = NOMINAL_FPS
    if config.clips.load_frames:
        frames, fps = _video_frames(videos, config.clips)
        for split in splits.values():
            split.frames = frames[split.clip]

    return PreparedDataset(
        name="algonauts2021",
        subject=config.subject,
        splits=splits,
        voxel_grayordinates=np.full(fmri.shape[1], -1, np.int64),
        tr=VIDEO_SECONDS,
        clip_seconds=VIDEO_SECONDS,
        fps=float(fps),
        config=to_dict(config),
        key=key,
        extras=extras,
    )


def _video_frames(videos: list[Path], clips: AlgonautsClipConfig) -> tuple[np.ndarray, float]:
    """First ``n_frames`` of every video: array of shape (n_videos, n_frames, height, width, 3), uint8, and the
    median frame rate of the videos."""
    out = np.zeros((len(videos), clips.n_frames, clips.height, clips.width, 3), np.uint8)
    rates = []
    for i, path in enumerate(tqdm(videos, desc="Algonauts videos", unit="video")):
        info = video.probe_video(path)
        if info.n_frames < clips.n_frames:
            raise ValueError(
                f"{path} has {info.n_frames} frames; expected at least clips.n_frames={clips.n_frames}. Lower "
                "n_frames or replace the file."
            )
        out[i] = video.read_frames(path, np.arange(clips.n_frames), (clips.height, clips.width))
        rates.append(info.fps)
    return out, float(np.median(rates))
