"""Reader for CC2017 (Wen et al. 2018, Purdue ``video_fmri_dataset``) and anything written in its layout.

Layout (shared/reference/methods_and_protocols.md B.1)::

    stimuli/seg1.mp4 … seg18.mp4, test1.mp4 … test5.mp4          8-min movies
    subject{k}/fmri/{segN|testN}/cifti/{segN|testN}_{r}_Atlas.dtseries.nii
                                                               r = 1..2 (training), 1..10 (test)

Published preprocessing (B.2–B.5), in order, per run: drop the leading volumes (1 for 245-volume runs, 2 for
246-volume runs) and the 4 trailing ones; keep the 59,412 cortical grayordinates (from the file's BrainModelAxis);
remove a 4th-order polynomial trend and z-score over time. Then: average repeats (or keep them as separate
training samples); select reliable vertices (repeat correlation → Fisher z → t-test over training segments →
Bonferroni; top-N or p threshold); pair clips with volumes (HRF shift or window); standardise each voxel with
the mean and std of the training rows. Validation segments are the last training segments; they take no part in
voxel selection or standardisation, and the test runs take part in nothing that is fitted.

The leading-volume count is derived rather than hard-coded: a run has ``n_movie_trs`` volumes of movie (its
stimulus duration / TR) plus ``trailing_volumes`` after it, and whatever precedes must be one of
``allowed_leading_volumes``. For the real 8-min movies that is exactly Wen's 245 → 1, 246 → 2 rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from pipelines.config import config_hash, to_dict
from pipelines.data import cifti, preprocess, video
from pipelines.data.dataset import PreparedDataset, Split, cached, files_fingerprint


@dataclass(frozen=True)
class SelectionConfig:
    """Reliability-based voxel selection (B.3)."""

    rule: Literal["top_n", "p_value"] = "top_n"  # top_n: the n most reliable (Mind-Animator); p_value: Bonferroni p
    n_voxels: int = 4500  # voxels kept by top_n (Mind-Animator: 4500)
    p_threshold: float = 0.01  # Bonferroni threshold for p_value (Wen/MinD-Video 0.01, NeuroClips 0.05)
    alternative: Literal["greater", "two-sided"] = "greater"  # t-test side; Wen's MATLAB uses two-sided


@dataclass(frozen=True)
class HRFConfig:
    """How clips are paired with fMRI volumes (B.5)."""

    mode: Literal["shift", "window"] = "shift"  # shift: one volume per clip; window: several
    shift: int = 2  # TRs from clip onset to the (centre) volume; NeuroClips 2 (4 s), Mind-Animator code 0
    before: int = 2  # window: volumes before the centre (BrainNRDS: 2)
    after: int = 2  # window: volumes after the centre (BrainNRDS: 2)
    edge: Literal["drop", "clamp"] = "drop"  # clips whose volumes fall outside the run: drop, or clamp to the edge


@dataclass(frozen=True)
class ClipConfig:
    """Frames sampled from each 2-s clip."""

    fps: float = 4.0  # frames per second taken from the movie (4 → 8 frames per 2-s clip)
    height: int = 64  # frame height after resize + centre crop
    width: int = 64  # frame width after resize + centre crop
    load_frames: bool = True  # decode the stimuli (false: fMRI only, much faster)


@dataclass(frozen=True)
class CC2017Config:
    """Configuration of the CC2017 reader; defaults follow the published protocol."""

    subject: int = 1  # subject number k in subject{k}/
    tr: float = 2.0  # seconds per volume, checked against every file
    expected_grayordinates: int = 91282  # grayordinates per file (HCP fsLR-32k, 2 mm)
    trailing_volumes: int = 4  # volumes dropped after the movie
    allowed_leading_volumes: tuple[int, ...] = (1, 2)  # volumes before the movie: 1 (245-vol runs) or 2 (246-vol)
    train_repeats: int = 2  # repeat files required per training segment (_1 … _n)
    test_repeats: int | None = None  # repeat files required per test run; null: every _r file found (1..r, no gap)
    exclude: tuple[str, ...] = ()  # repeat files to leave out, as "test2_9" (MA leaves out subject 3, test2, repeat 9)
    detrend_order: int = 4  # polynomial detrend degree, per run
    train_repeat_mode: Literal["average", "separate"] = "average"  # separate: one training sample per repeat
    n_val_segments: int = 1  # last training segments held out for validation / checkpoint selection
    standardize: bool = True  # per-voxel z-score after selection, fitted on training rows only
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    hrf: HRFConfig = field(default_factory=HRFConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)


@dataclass(frozen=True)
class Run:
    """One stimulus movie and its fMRI repeat files."""

    name: str  # "seg3" or "test2"
    video: Path
    repeats: tuple[Path, ...]
    n_movie_trs: int


def _numbered(paths: list[Path], prefix: str) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"^{prefix}(\d+)\.mp4$")
    found = [(int(m.group(1)), p) for p in paths if (m := pattern.match(p.name))]
    return sorted(found)


def discover_runs(root: str | Path, config: CC2017Config) -> tuple[list[Run], list[Run]]:
    """Find the training segments and test runs of ``subject{k}`` and check every file they need.

    Returns
    -------
    train_runs, test_runs : list of Run

    Raises
    ------
    FileNotFoundError
        If a folder, movie or repeat file is missing.
    """
    root = Path(root)
    stimuli = root / "stimuli"
    if not stimuli.is_dir():
        raise FileNotFoundError(
            f"{stimuli} does not exist; expected the CC2017 layout with stimuli/seg*.mp4 and test*.mp4."
        )
    subject_dir = root / f"subject{config.subject}" / "fmri"
    if not subject_dir.is_dir():
        present = sorted(p.name for p in root.glob("subject*"))
        raise FileNotFoundError(f"{subject_dir} does not exist; found subjects {present}. Set subject in the config.")
    movies = sorted(stimuli.glob("*.mp4"))
    out: dict[str, list[Run]] = {}
    for kind, required in (("seg", config.train_repeats), ("test", config.test_repeats)):
        numbered = _numbered(movies, kind)
        if not numbered:
            raise FileNotFoundError(f"{stimuli} has no {kind}N.mp4 files; expected {kind}1.mp4, {kind}2.mp4, ….")
        runs = []
        for _, movie in numbered:
            name = movie.stem
            runs.append(
                Run(name, movie, _repeat_files(subject_dir, name, required, config), _movie_trs(movie, config.tr))
            )
        out[kind] = runs
    return out["seg"], out["test"]


def _repeat_files(subject_dir: Path, name: str, required: int | None, config: CC2017Config) -> tuple[Path, ...]:
    folder = subject_dir / name / "cifti"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; expected the fMRI of stimulus {name}.mp4 there.")
    found = {}
    for path in folder.glob(f"{name}_*_Atlas.dtseries.nii"):
        m = re.fullmatch(rf"{name}_(\d+)_Atlas\.dtseries\.nii", path.name)
        if m:
            found[int(m.group(1))] = path
    n = required if required is not None else max(found, default=0)
    missing = [r for r in range(1, n + 1) if r not in found and f"{name}_{r}" not in config.exclude]
    if n == 0 or missing:
        want = f"{name}_{missing[0] if missing else 1}_Atlas.dtseries.nii"
        raise FileNotFoundError(
            f"{folder / want} does not exist: expected repeats 1..{max(n, 1)} of {name}, found {sorted(found)}. "
            f'Add the file, or list "{name}_{missing[0] if missing else 1}" under exclude in the config.'
        )
    return tuple(found[r] for r in range(1, n + 1) if f"{name}_{r}" not in config.exclude and r in found)


def _movie_trs(movie: Path, tr: float) -> int:
    info = video.probe_video(movie)
    n = int(np.floor(info.duration / tr + 1e-3))
    if n < 1:
        raise ValueError(f"{movie} lasts {info.duration:.2f} s; expected at least one TR of {tr} s.")
    return n


def load_run(path: Path, run: Run, config: CC2017Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one repeat file and apply the per-run preprocessing (trim, cortex, detrend, z-score).

    Returns
    -------
    data : array of shape (n_movie_trs, n_cortex), float32
    columns : array of shape (n_cortex,), int
        The file's cortical columns (left then right).
    grayordinates : array of shape (n_cortex,), int
        Their index in the standard HCP 91k order.
    """
    series = cifti.read_dtseries(path, expected_grayordinates=config.expected_grayordinates, expected_tr=config.tr)
    leading = series.n_trs - config.trailing_volumes - run.n_movie_trs
    if leading not in config.allowed_leading_volumes:
        allowed = sorted(run.n_movie_trs + config.trailing_volumes + k for k in config.allowed_leading_volumes)
        raise ValueError(
            f"{path} has {series.n_trs} volumes; expected {' or '.join(map(str, allowed))}: its movie "
            f"{run.video.name} lasts {run.n_movie_trs} TRs of {config.tr:g} s, and the protocol drops "
            f"{config.trailing_volumes} trailing and {'/'.join(map(str, config.allowed_leading_volumes))} leading volumes."
        )
    columns, _, _ = cifti.cortex_columns(series.axis)
    if columns.size == 0:
        raise ValueError(f"{path} has no CORTEX_LEFT/CORTEX_RIGHT surface models; expected cortical grayordinates.")
    data = series.data[leading : leading + run.n_movie_trs][:, columns]
    data = preprocess.zscore(preprocess.polynomial_detrend(data, config.detrend_order))
    return data, columns, cifti.standard_grayordinates(series.axis, columns)


def prepare_cc2017(
    root: str | Path, config: CC2017Config | None = None, cache_dir: str | Path | None = None
) -> PreparedDataset:
    """Read and preprocess a CC2017-layout data set, or load it from the cache.

    Parameters
    ----------
    root : str or Path
        The folder holding ``stimuli/`` and ``subject{k}/``.
    config : CC2017Config, optional
    cache_dir : str or Path, optional
        Cache root (default ``$MINDREEL_CACHE`` or ``~/.cache/mindreel``); ``""`` disables caching.

    Returns
    -------
    PreparedDataset
        Splits "train", "val", "test"; ``extras`` holds the reliability t and Bonferroni p of every cortical
        grayordinate (``reliability_t``, ``reliability_p_bonferroni``, ``cortex_grayordinates``), the selected
        cortex positions and the standardiser.
    """
    config = config or CC2017Config()
    train_runs, test_runs = discover_runs(root, config)
    if not 0 <= config.n_val_segments <= len(train_runs) - 2:
        raise ValueError(
            f"n_val_segments: expected 0..{len(train_runs) - 2} (selection needs >= 2 training segments), "
            f"got {config.n_val_segments} with {len(train_runs)} segments."
        )
    inputs = [r.video for r in train_runs + test_runs] + [p for r in train_runs + test_runs for p in r.repeats]
    key = config_hash(config, files_fingerprint(inputs))
    return cached(lambda: _build(train_runs, test_runs, config, key), key, f"cc2017-sub{config.subject}", cache_dir)


def _build(train_runs: list[Run], test_runs: list[Run], config: CC2017Config, key: str) -> PreparedDataset:
    n_fit = len(train_runs) - config.n_val_segments
    fit_runs, val_runs = train_runs[:n_fit], train_runs[n_fit:]
    total = sum(len(r.repeats) for r in train_runs + test_runs)
    progress = tqdm(total=total, desc="CC2017 runs", unit="file")

    # 1. Training segments: preprocess every repeat and measure test–retest reliability.
    fit_data, r_per_segment, reference = {}, [], None
    for run in fit_runs:
        repeats = []
        for path in run.repeats:
            data, columns, grayordinates = load_run(path, run, config)
            reference = _check_same_cortex(path, columns, grayordinates, reference)
            repeats.append(data)
            progress.update()
        if len(repeats) < 2:
            raise ValueError(f"{run.name}: reliability needs 2 repeats, found {len(repeats)} ({run.repeats}).")
        r_per_segment.append(preprocess.pearson_columns(repeats[0], repeats[1]))
        fit_data[run.name] = repeats

    # 2. Voxel selection on the fitting segments only.
    reliability = preprocess.repeat_reliability(np.stack(r_per_segment), config.selection.alternative)
    sel = config.selection
    selected = preprocess.select_voxels(reliability, sel.rule, sel.n_voxels, sel.p_threshold)

    # 3. Pair clips with volumes, per split.
    def rows(run: Run, repeats: list[np.ndarray], separate: bool) -> Split:
        chosen = [r[:, selected] for r in repeats]
        if not separate:
            chosen = [np.mean(chosen, axis=0)]
        parts = []
        for number, data in enumerate(chosen, start=1):
            fmri, clips = preprocess.hrf_align(data, run.n_movie_trs, **vars(config.hrf))
            parts.append((fmri, clips, number if separate else 0))
        return Split(
            fmri=np.concatenate([p[0] for p in parts]).astype(np.float32),
            run=np.array([run.name] * sum(len(p[1]) for p in parts)),
            clip=np.concatenate([p[1] for p in parts]),
            repeat=np.concatenate([np.full(len(p[1]), p[2]) for p in parts]),
        )

    def load_selected(run: Run) -> list[np.ndarray]:
        out = []
        for path in run.repeats:
            data, columns, grayordinates = load_run(path, run, config)
            _check_same_cortex(path, columns, grayordinates, reference)
            out.append(data)
            progress.update()
        return out

    separate = config.train_repeat_mode == "separate"
    parts = {
        "train": [rows(run, fit_data.pop(run.name), separate) for run in fit_runs],
        "val": [rows(run, load_selected(run), False) for run in val_runs],
        "test": [rows(run, load_selected(run), False) for run in test_runs],
    }
    progress.close()
    train = _concat(parts.pop("train"))
    splits = {"train": train, **{name: _concat(chunks, like=train) for name, chunks in parts.items()}}

    # 4. Standardise with training statistics only.
    extras = {
        "cortex_grayordinates": reference[1],
        "reliability_t": reliability.t.astype(np.float32),
        "reliability_p_bonferroni": reliability.p_bonferroni,
        "selected_cortex_index": selected,
    }
    if config.standardize:
        scaler = preprocess.Standardizer.fit(splits["train"].fmri)
        for split in splits.values():
            split.fmri = scaler.transform(split.fmri)
        extras |= {"standardizer_mean": scaler.mean, "standardizer_std": scaler.std}

    # 5. Clip frames.
    if config.clips.load_frames:
        movies = {r.name: r for r in train_runs + test_runs}
        for split in splits.values():
            split.frames = _clip_frames(split, movies, config)

    return PreparedDataset(
        name="cc2017",
        subject=f"subject{config.subject}",
        splits=splits,
        voxel_grayordinates=reference[1][selected],
        tr=config.tr,
        clip_seconds=config.tr,
        fps=config.clips.fps,
        config=to_dict(config),
        key=key,
        extras=extras,
    )


def _check_same_cortex(
    path: Path, columns: np.ndarray, grayordinates: np.ndarray, reference: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Check that a file has the first training file's cortical columns and vertices; return the reference."""
    if reference is not None and not (
        np.array_equal(columns, reference[0]) and np.array_equal(grayordinates, reference[1])
    ):
        raise ValueError(
            f"{path} has a different cortical grayordinate layout ({columns.size} columns) from the first "
            f"training file ({reference[0].size}); expected every run of the subject on the same axis."
        )
    return columns, grayordinates


def _concat(chunks: list[Split], like: Split | None = None) -> Split:
    """Concatenate per-run splits; with no runs, an empty split shaped like ``like``."""
    if not chunks:
        empty = np.zeros((0, *like.fmri.shape[1:]), np.float32)
        return Split(empty, np.array([], str), np.array([], np.int64), np.array([], np.int64))
    return Split(
        fmri=np.concatenate([c.fmri for c in chunks]),
        run=np.concatenate([c.run for c in chunks]),
        clip=np.concatenate([c.clip for c in chunks]),
        repeat=np.concatenate([c.repeat for c in chunks]),
    )


def _clip_frames(split: Split, movies: dict[str, Run], config: CC2017Config) -> np.ndarray:
    """Frames of every sample's clip: array of shape (n_samples, n_frames, height, width, 3), uint8."""
    c = config.clips
    per_clip = int(round(config.tr * c.fps))
    out = np.zeros((len(split), per_clip, c.height, c.width, 3), np.uint8)
    for name in dict.fromkeys(split.run.tolist()):
        run = movies[name]
        info = video.probe_video(run.video)
        indices = video.source_indices(run.n_movie_trs * per_clip, c.fps, info.fps)
        frames = video.read_frames(run.video, indices, (c.height, c.width))
        frames = frames.reshape(run.n_movie_trs, per_clip, c.height, c.width, 3)
        mask = split.run == name
        out[mask] = frames[split.clip[mask]]
    return out
