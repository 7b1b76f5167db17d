"""Reader for the HCP 7T movie-watching data (Mind-Animator, shared/reference/methods_and_protocols.md B.6).

Layout::

    {root}/clip_times_24.npy                                  movie blocks of the four runs (see read_clip_times)
    {root}/Post_20140821_version/7T_MOVIE1_CC1_v2.mp4 …       the stimuli, 24 fps (MOVIE1..4: CC1, HO1, CC2, HO2)
    {root}/{subject}/MNINonLinear/Results/tfMRI_MOVIE{k}_7T_{pe}/tfMRI_MOVIE{k}_7T_{pe}*_Atlas*.dtseries.nii
                                                              TR 1 s; pe = AP (MOVIE1, 4) or PA (MOVIE2, 3)

Published protocol (Mind-Animator ``Data_preprocess/HCP/step1_cut_video_clips.py``, ``step2_get_video_frames.py``,
``中心剪裁图片.py``, ``step5_fMRI_surface_preparation.py``): every movie block of ``clip_times_24.npy`` (rest periods
removed) is cut into 1-s clips, 728 + 792 + 745 + 775 = 3040 in all; the clip with onset second s is paired with
volume s + 4 (an HRF shift of 4 TRs); the ROI is 12 Glasser areas in both hemispheres (the code lists label keys
1, 2, 4, 5, 6, 13, 19, 20, 21, 23, 139, 140 and +180; these are V1, MST, V2, V3, V4, V3A, V3B, LO1, LO2, MT, TPOJ1,
TPOJ2 in the MMP1 order, an inference, resolved here by name through :func:`pipelines.data.atlas.area_mask` and the
file's own BrainModelAxis); each voxel is min–max scaled. Frames are every 3rd frame of the 24-fps clip (8 per
clip), taken from frames squashed to 512 x 512, centre-cropped to 420 x 420 and resized back to 512 x 512.

Differences, all configurable: Mind-Animator scales with the min and max of all rows of a movie; here the scaling is
fitted on training clips only, so validation and test values may fall outside [0, 1]. Its scripts show no split.
Here the test split is the last block of each run: in all four runs that is the same test–retest clip (earlier HCP
movie-encoding scripts that read the same ``clip_times_24.npy`` drop that block from training because "it is
repeated"), so the test split holds one presentation of it per run, told apart by ``run`` and by ``repeat`` (the
run's 1-based position in ``movies``). Validation takes the last ``val_blocks`` training blocks, counted over the runs
in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pipelines.config import config_hash, to_dict
from pipelines.data import atlas, cifti, preprocess, video
from pipelines.data.dataset import SPLITS, PreparedDataset, Split, cached, files_fingerprint
from pipelines.data.safe_pickle import load_pickle

MOVIE_FILES = {
    1: "7T_MOVIE1_CC1_v2.mp4",
    2: "7T_MOVIE2_HO1_v2.mp4",
    3: "7T_MOVIE3_CC2_v2.mp4",
    4: "7T_MOVIE4_HO2_v2.mp4",
}
PHASE_ENCODING = {1: "AP", 2: "PA", 3: "PA", 4: "AP"}
MIND_ANIMATOR_AREAS = ("V1", "MST", "V2", "V3", "V4", "V3A", "V3B", "LO1", "LO2", "MT", "TPOJ1", "TPOJ2")
CLIP_SECONDS = 1.0


@dataclass(frozen=True)
class HCPClipConfig:
    """Frames sampled from each 1-s clip."""

    fps: float = 8.0  # frames per second of clip (8: every 3rd frame of the 24-fps movie, as Mind-Animator)
    height: int = 512  # output frame height (Mind-Animator: 512)
    width: int = 512  # output frame width (Mind-Animator: 512)
    center_crop: float = 0.8203125  # central fraction of each side kept before the final resize (MA: 420 of 512 px)
    keep_aspect: bool = False  # false: squash the cropped region to height x width (as MA); true: cover + centre crop
    load_frames: bool = True  # decode the stimuli (false: fMRI only, much faster)


@dataclass(frozen=True)
class HCP7TConfig:
    """Configuration of the HCP 7T movie reader; defaults follow Mind-Animator (see the module docstring)."""

    subject: str = "100610"  # HCP subject ID, a folder under the data root (MA: 100610, 102816, 104416)
    movies: tuple[int, ...] = (1, 2, 3, 4)  # movie runs to read, in this order
    clip_times: str = "clip_times_24.npy"  # movie-block table, relative to the data root (or absolute)
    clip_times_fps: float = 24.0  # frame rate of the frame numbers in clip_times
    stimulus_dir: str = "Post_20140821_version"  # folder of the 7T_MOVIE*_v2.mp4 stimuli, relative to the root
    fmri_glob: str = "tfMRI_MOVIE{movie}_7T_{pe}*_Atlas*.dtseries.nii"  # run file in each Results/ folder; one match
    tr: float = 1.0  # seconds per volume, checked against every file
    expected_grayordinates: int | None = 91282  # grayordinates per file (HCP fsLR-32k, 2 mm); null accepts any
    hrf_shift: int = 4  # volumes from clip onset to the paired volume (MA: 4 s)
    rois: tuple[str, ...] = MIND_ANIMATOR_AREAS  # Glasser HCP-MMP1.0 area names, without hemisphere prefix
    hemispheres: tuple[str, ...] = ("L", "R")  # hemispheres of the ROI areas
    detrend_order: int | None = None  # polynomial detrend of each whole run before rows are taken; null: off (MA)
    zscore_runs: bool = False  # z-score each whole run over time, after detrending (MA: off)
    scaling: Literal["minmax", "zscore", "none"] = "minmax"  # per voxel, fitted on training clips only (MA: minmax)
    test_blocks: int = 1  # final blocks of each run in the test split (1: the repeated test–retest clip)
    val_blocks: int = 1  # last training blocks, counted over the runs in order, held out for validation
    clips: HCPClipConfig = field(default_factory=HCPClipConfig)


# --------------------------------------------------------------------------------------------------------------
# Inputs


def read_clip_times(path: str | Path, movies: tuple[int, ...] = (1, 2, 3, 4)) -> dict[int, np.ndarray]:
    """Read the movie-block table ``clip_times_24.npy``.

    Format (as Mind-Animator's HCP scripts read it, ``np.load(path, allow_pickle=True).item()``, and earlier HCP
    movie-encoding code that indexes it with ``.item().get("4")``): ``np.save`` of a dict wrapped in a 0-d object
    array. Keys are the
    movie numbers as strings ``"1"`` .. ``"4"``; each value is an array of shape (n_blocks, 2) holding the
    ``[start, end)`` frame numbers, at 24 fps from the start of the run, of the movie blocks of that run (rest
    periods excluded, the test–retest clip last). The dict is read with the restricted unpickler
    (:func:`pipelines.data.safe_pickle.load_pickle`), never with ``allow_pickle=True``.

    Parameters
    ----------
    path : str or Path
    movies : tuple of int
        Movies whose blocks are required.

    Returns
    -------
    dict
        Movie number → array of shape (n_blocks, 2), float64: start and end frame of each block.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not in that format, a movie is missing, or its blocks are empty, reversed or overlapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected the HCP 7T movie-block table clip_times_24.npy.")
    expected = "np.save of a dict {'1': array of shape (n_blocks, 2), ..., '4': ...} (a 0-d object array)"
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read_header[version](f)
        except ValueError as err:
            raise ValueError(f"{path} is not a readable .npy file ({err}); expected {expected}.") from err
        if not dtype.hasobject:
            raise ValueError(f"{path} holds a {dtype} array of shape {shape}; expected {expected}.")
        obj = load_pickle(f, str(path))
    table = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(table, dict):
        raise ValueError(f"{path} holds a {type(table).__name__}; expected {expected}.")
    out = {}
    for movie in movies:
        blocks = table.get(str(movie), table.get(movie))
        if blocks is None:
            raise ValueError(
                f"{path} has no entry '{movie}' (MOVIE{movie}); expected {expected}, got keys {sorted(map(str, table))}."
            )
        try:
            blocks = np.asarray(blocks, dtype=np.float64)
        except (TypeError, ValueError):
            blocks = np.asarray(blocks, dtype=object)
        if blocks.dtype != np.float64 or blocks.ndim != 2 or blocks.shape[1] != 2 or blocks.shape[0] == 0:
            raise ValueError(
                f"{path}, entry '{movie}': expected an array of shape (n_blocks, 2) of [start, end) frame numbers, "
                f"got {blocks.dtype} of shape {blocks.shape}."
            )
        start, end = blocks[:, 0], blocks[:, 1]
        if not np.isfinite(blocks).all() or (start < 0).any() or (end <= start).any() or (start[1:] < end[:-1]).any():
            raise ValueError(
                f"{path}, entry '{movie}': expected blocks [start, end) with 0 <= start < end, in order and not "
                f"overlapping, got {blocks.tolist()}."
            )
        out[movie] = blocks
    return out


def clip_onsets(blocks: np.ndarray, fps: float = 24.0) -> list[np.ndarray]:
    """Onset second of every 1-s clip of each block, exactly as Mind-Animator computes them.

    For a block ``[start, end)`` in frames: ``np.arange(start / fps, end / fps)`` truncated to integers. A block
    that does not start on a whole second starts its first clip at the second it falls in, and a final partial
    second still makes a clip.

    Parameters
    ----------
    blocks : array of shape (n_blocks, 2)
        Start and end frame of each block.
    fps : float
        Frame rate of those frame numbers.

    Returns
    -------
    list of array of shape (n_clips_in_block,), int
    """
    return [np.arange(start / fps, end / fps).astype(np.int64) for start, end in np.asarray(blocks, np.float64)]


def find_run_file(root: str | Path, subject: str, movie: int, pattern: str) -> Path:
    """The dense time series of run MOVIE``movie``: the one file matching ``pattern`` in its Results folder.

    Raises
    ------
    FileNotFoundError
        If the subject or run folder is missing, or no file matches.
    ValueError
        If several files match (set ``fmri_glob`` to pick one).
    """
    pe = PHASE_ENCODING[movie]
    subject_dir = Path(root) / subject
    if not subject_dir.is_dir():
        present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())[:10] if Path(root).is_dir() else []
        raise FileNotFoundError(
            f"{subject_dir} does not exist; expected the HCP subject folder {subject}/MNINonLinear/Results/ under the "
            f"data root (found folders {present}). Check the root and subject in the config."
        )
    folder = subject_dir / "MNINonLinear" / "Results" / f"tfMRI_MOVIE{movie}_7T_{pe}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; expected the MOVIE{movie} run ({pe}) of subject {subject}.")
    name = pattern.format(movie=movie, pe=pe)
    matches = sorted(folder.glob(name))
    if not matches:
        present = sorted(p.name for p in folder.iterdir())[:8]
        raise FileNotFoundError(
            f"{folder} has no file matching {name}; expected one CIFTI dense time series such as "
            f"tfMRI_MOVIE{movie}_7T_{pe}_Atlas_hp2000_clean.dtseries.nii (found {present})."
        )
    if len(matches) > 1:
        raise ValueError(
            f"{folder} has {len(matches)} files matching {name}: {[p.name for p in matches]}; expected exactly one. "
            "Set fmri_glob in the config to pick one, e.g. 'tfMRI_MOVIE{movie}_7T_{pe}_Atlas_hp2000_clean.dtseries.nii'."
        )
    return matches[0]


def center_crop_resize(frame: np.ndarray, fraction: float, height: int, width: int, keep_aspect: bool) -> np.ndarray:
    """Keep the central ``fraction`` of each side of a frame, then resize it to (height, width).

    Parameters
    ----------
    frame : array of shape (in_height, in_width, 3), uint8
    fraction : float
        In (0, 1]; Mind-Animator keeps 420 of 512 px (0.8203125).
    height, width : int
    keep_aspect : bool
        False squashes the cropped region to (height, width) (Mind-Animator); True resizes it to cover
        (height, width) and crops the centre (:func:`pipelines.data.video.resize_center_crop`).

    Returns
    -------
    array of shape (height, width, 3), uint8
    """
    in_h, in_w = frame.shape[:2]
    crop_h, crop_w = max(1, round(in_h * fraction)), max(1, round(in_w * fraction))
    top, left = (in_h - crop_h) // 2, (in_w - crop_w) // 2
    region = np.ascontiguousarray(frame[top : top + crop_h, left : left + crop_w])
    if keep_aspect:
        return video.resize_center_crop(region, height, width)
    if region.shape[:2] == (height, width):
        return region
    return np.asarray(Image.fromarray(region).resize((width, height), Image.Resampling.BICUBIC))


# --------------------------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class _Plan:
    """Clips of one run: where each comes from and which split it goes to."""

    movie: int
    onsets: np.ndarray  # array of shape (n_clips,), int: onset second within the run
    split: np.ndarray  # array of shape (n_clips,), str: "train", "val" or "test"
    repeat: np.ndarray  # array of shape (n_clips,), int


def prepare_hcp7t(
    root: str | Path, config: HCP7TConfig | None = None, cache_dir: str | Path | None = None
) -> PreparedDataset:
    """Read and preprocess one subject of the HCP 7T movie data, or load it from the cache.

    Each 1-s clip is one sample: ``run`` is ``"MOVIE{k}"``, ``clip`` the clip's 0-based index within its run (over
    the run's blocks in order), ``fmri`` the ROI values of volume ``floor(onset / tr) + hrf_shift`` (onset in
    seconds), after optional per-run detrending / z-scoring and the per-voxel scaling fitted on training clips.

    Parameters
    ----------
    root : str or Path
        The data root holding ``{subject}/MNINonLinear/``, ``clip_times_24.npy`` and ``Post_20140821_version/``
        (the last two can be moved with ``clip_times`` and ``stimulus_dir``).
    config : HCP7TConfig, optional
    cache_dir : str or Path, optional
        Cache root (default ``$MINDREEL_CACHE`` or ``~/.cache/mindreel``); ``""`` disables caching.

    Returns
    -------
    PreparedDataset
        Splits "train", "val", "test"; ``fmri`` arrays of shape (n_clips, n_voxels), ``frames`` arrays of shape
        (n_clips, n_frames, height, width, 3), uint8. ``voxel_grayordinates`` is the HCP 91k index of each voxel
        (ascending). ``extras``: ``roi`` (Glasser area of each voxel, e.g. "L_V1"), and ``minmax_min`` /
        ``minmax_max`` or ``standardizer_mean`` / ``standardizer_std``, the scaling fitted on training clips.

    Raises
    ------
    FileNotFoundError
        If a folder or file is missing.
    ValueError
        If the config is invalid, a file has the wrong size, TR or values, or the clip times fall outside a run
        or a video.
    """
    config = config or HCP7TConfig()
    root = Path(root)
    _check_config(config)
    try:
        mask = atlas.area_mask(config.rois, config.hemispheres)
    except ValueError as err:
        raise ValueError(f"rois / hemispheres: {err}") from err
    clip_times_path = root / config.clip_times
    blocks = read_clip_times(clip_times_path, config.movies)
    plans = _plan(blocks, config, clip_times_path)
    runs = {k: find_run_file(root, config.subject, k, config.fmri_glob) for k in config.movies}
    videos = {}
    if config.clips.load_frames:
        for k in config.movies:
            videos[k] = root / config.stimulus_dir / MOVIE_FILES[k]
            if not videos[k].is_file():
                raise FileNotFoundError(
                    f"{videos[k]} does not exist; expected the HCP 7T stimulus {MOVIE_FILES[k]} (Post_20140821 "
                    "version) there. Set stimulus_dir in the config, or clips.load_frames: false for fMRI only."
                )
    key = config_hash(config, files_fingerprint([clip_times_path, *runs.values(), *videos.values()]))
    return cached(
        lambda: _build(plans, runs, videos, mask, clip_times_path, config, key),
        key,
        f"hcp7t-{config.subject}",
        cache_dir,
    )


def _check_config(config: HCP7TConfig) -> None:
    if not config.movies or len(set(config.movies)) != len(config.movies) or not set(config.movies) <= {1, 2, 3, 4}:
        raise ValueError(f"movies: expected distinct movie numbers from 1..4, got {list(config.movies)}.")
    if config.scaling not in ("minmax", "zscore", "none"):
        raise ValueError(f"scaling: expected 'minmax', 'zscore' or 'none', got {config.scaling!r}.")
    positive = {"tr": config.tr, "clip_times_fps": config.clip_times_fps, "clips.fps": config.clips.fps}
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name}: expected a positive number, got {value}.")
    counts = {"hrf_shift": config.hrf_shift, "test_blocks": config.test_blocks, "val_blocks": config.val_blocks}
    counts |= {"detrend_order": config.detrend_order or 0}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name}: expected a count >= 0, got {value}.")
    c = config.clips
    per_clip = c.fps * CLIP_SECONDS
    if abs(per_clip - round(per_clip)) > 1e-6:
        raise ValueError(f"clips.fps: expected a whole number of frames per 1-s clip, got fps={c.fps}.")
    if not 0 < c.center_crop <= 1 or c.height < 1 or c.width < 1:
        raise ValueError(
            f"clips: expected 0 < center_crop <= 1 and height, width >= 1, got {c.center_crop}, {c.height}, {c.width}."
        )


def _plan(blocks: dict[int, np.ndarray], config: HCP7TConfig, clip_times_path: Path) -> list[_Plan]:
    """Assign every block to a split and every clip to an onset."""
    labels: dict[tuple[int, int], str] = {}
    training = []
    for movie in config.movies:
        n_blocks = len(blocks[movie])
        for b in range(n_blocks):
            labels[movie, b] = "test" if b >= n_blocks - config.test_blocks else "train"
            if labels[movie, b] == "train":
                training.append((movie, b))
    if config.val_blocks >= len(training):
        raise ValueError(
            f"val_blocks={config.val_blocks} with test_blocks={config.test_blocks} leaves no training block: the "
            f"movies {list(config.movies)} have {len(training)} non-test blocks in {clip_times_path}. Lower them."
        )
    for movie_block in training[len(training) - config.val_blocks :]:
        labels[movie_block] = "val"
    plans = []
    for position, movie in enumerate(config.movies, start=1):
        onsets = clip_onsets(blocks[movie], config.clip_times_fps)
        last = len(onsets) - 1
        plans.append(
            _Plan(
                movie=movie,
                onsets=np.concatenate(onsets),
                split=np.concatenate([np.full(len(o), labels[movie, b]) for b, o in enumerate(onsets)]),
                repeat=np.concatenate([np.full(len(o), position if b == last else 1) for b, o in enumerate(onsets)]),
            )
        )
    return plans


def _roi_columns(series: cifti.DenseSeries, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The file's columns inside the ROI and their standard 91k indices, ordered by standard index."""
    columns, _, _ = cifti.cortex_columns(series.axis)
    standard = cifti.standard_grayordinates(series.axis, columns)
    keep = standard >= 0
    keep[keep] = mask[standard[keep]]
    order = np.argsort(standard[keep], kind="stable")
    return columns[keep][order], standard[keep][order]


def _build(
    plans: list[_Plan],
    runs: dict[int, Path],
    videos: dict[int, Path],
    mask: np.ndarray,
    clip_times_path: Path,
    config: HCP7TConfig,
    key: str,
) -> PreparedDataset:
    # 1. fMRI: ROI columns of each run, optional per-run detrend / z-score, the volume paired with each clip.
    grayordinates, first_run, fmri = None, None, {}
    for plan in tqdm(plans, desc="HCP 7T runs", unit="run"):
        path = runs[plan.movie]
        series = cifti.read_dtseries(path, expected_grayordinates=config.expected_grayordinates, expected_tr=config.tr)
        columns, standard = _roi_columns(series, mask)
        if grayordinates is None:
            if standard.size == 0:
                raise ValueError(
                    f"{path} has none of the {int(mask.sum())} grayordinates of the ROI {list(config.rois)}; expected "
                    "cortical surface models (CORTEX_LEFT / CORTEX_RIGHT) that cover it."
                )
            grayordinates, first_run = standard, path
        elif not np.array_equal(standard, grayordinates):
            raise ValueError(
                f"{path} covers {standard.size} of the ROI's grayordinates; expected the same {grayordinates.size} "
                f"as {first_run}. Use files of the same CIFTI space for every run."
            )
        rows = np.floor(plan.onsets / config.tr + 1e-6).astype(np.int64) + config.hrf_shift
        if rows.max() >= series.n_trs:
            i = int(np.argmax(rows))
            raise ValueError(
                f"{path} has {series.n_trs} volumes; expected at least {rows[i] + 1}: the clip at second "
                f"{plan.onsets[i]} of MOVIE{plan.movie} in {clip_times_path} is paired with volume {rows[i]} "
                f"(0-based) with hrf_shift={config.hrf_shift}. Check clip_times, hrf_shift and that the run is complete."
            )
        data = series.data[:, columns]
        if config.detrend_order is not None:
            data = preprocess.polynomial_detrend(data, config.detrend_order)
        if config.zscore_runs:
            data = preprocess.zscore(data)
        fmri[plan.movie] = data[rows].astype(np.float32)

    # 2. Splits.
    splits = {}
    for name in SPLITS:
        chosen = [(plan, plan.split == name) for plan in plans]
        splits[name] = Split(
            fmri=np.concatenate([fmri[p.movie][m] for p, m in chosen]).reshape(-1, grayordinates.size),
            run=np.concatenate([np.full(int(m.sum()), f"MOVIE{p.movie}") for p, m in chosen]),
            clip=np.concatenate([np.flatnonzero(m) for p, m in chosen]),
            repeat=np.concatenate([p.repeat[m] for p, m in chosen]),
        )

    # 3. Per-voxel scaling fitted on the training clips.
    labels, keys = atlas.glasser()
    names = {v: k for k, v in keys.items()}
    extras = {"roi": np.array([names[int(k)] for k in labels[grayordinates]])}
    if config.scaling == "minmax":
        low, high = splits["train"].fmri.min(axis=0), splits["train"].fmri.max(axis=0)
        span = np.where(high > low, high - low, 1.0).astype(np.float32)
        for split in splits.values():
            split.fmri = ((split.fmri - low) / span).astype(np.float32)
        extras |= {"minmax_min": low, "minmax_max": high}
    elif config.scaling == "zscore":
        scaler = preprocess.Standardizer.fit(splits["train"].fmri)
        for split in splits.values():
            split.fmri = scaler.transform(split.fmri)
        extras |= {"standardizer_mean": scaler.mean, "standardizer_std": scaler.std}

    # 4. Clip frames.
    if config.clips.load_frames:
        frames = {p.movie: _movie_frames(videos[p.movie], p, clip_times_path, config.clips) for p in plans}
        for name, split in splits.items():
            parts = [frames[p.movie][p.split == name] for p in plans]
            split.frames = np.concatenate(parts)

    return PreparedDataset(
        name="hcp7t",
        subject=config.subject,
        splits=splits,
        voxel_grayordinates=grayordinates,
        tr=config.tr,
        clip_seconds=CLIP_SECONDS,
        fps=config.clips.fps,
        config=to_dict(config),
        key=key,
        extras=extras,
    )


def _movie_frames(path: Path, plan: _Plan, clip_times_path: Path, clips: HCPClipConfig) -> np.ndarray:
    """Frames of every clip of one run: array of shape (n_clips, n_frames, height, width, 3), uint8."""
    info = video.probe_video(path)
    per_clip = int(round(clips.fps * CLIP_SECONDS))
    indices = np.stack([video.source_indices(per_clip, clips.fps, info.fps, start=float(s)) for s in plan.onsets])
    if indices.max() >= info.n_frames:
        i = int(np.argmax(indices.max(axis=1)))
        raise ValueError(
            f"{path} has {info.n_frames} frames ({info.duration:.2f} s at {info.fps:g} fps); expected at least "
            f"{int(indices.max()) + 1}: the clip at second {plan.onsets[i]} of MOVIE{plan.movie} in "
            f"{clip_times_path} needs frame {int(indices[i].max())}. Check that the clip times and the stimulus "
            "version (Post_20140821) match."
        )
    # Decode at about the output scale (aspect kept), then crop and resize each frame as it is decoded.
    scale = max(clips.height / info.height, clips.width / info.width)
    size = None if scale >= 1 else (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
    out = video.read_frames(
        path,
        indices.ravel(),
        size,
        transform=lambda frame: center_crop_resize(
            frame, clips.center_crop, clips.height, clips.width, clips.keep_aspect
        ),
    )
    return out.reshape(len(plan.onsets), per_clip, clips.height, clips.width, 3)
