"""A pretraining corpus for the demo-tier teachers: simulated clips that no subject saw.

The published teachers (CLIP, SD, RAFT) were trained on far more images than any fMRI experiment shows; the demo
tier's stand-ins would otherwise see only the simulated subject's 1,180 training clips, and over-fit them (the demo
CLIP's validation retrieval peaked after 200–500 steps). This module renders more movies with the subject's own
stimulus generator and settings, sampled as the CC2017 reader samples clips (``clip_fps`` frames per second,
resized and centre-cropped to ``size``), and returns their frames with the simulator's labels.

Independence from the experiment: run ``i`` of the corpus draws from ``SeedSequence(seed, spawn_key=(9, i))``;
:func:`pipelines.data.twin.simulate.simulate` uses the keys 0 (brain), 1 (stimuli) and 2 (noise), so no corpus movie
is a movie of the subject's, whatever the seeds. Corpus clips may share a category, colour and background with a test
clip, never its rendering. The movies are not H.264-encoded (the subject's stimuli are, at crf 18).

The corpus is cached under ``cache_dir`` by :class:`pipelines.features.extract.FeatureCache` (one folder
``corpus-<hash of the arguments>``, each array an atomically written ``.npy`` read back memory-mapped), since
rendering 7,200 clips takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipelines.config import config_hash
from pipelines.data.twin.stimuli import RunRenderer, StimulusConfig, plan_run
from pipelines.data.video import resize_center_crop, source_indices
from pipelines.features.extract import FeatureCache

CORPUS_STREAM = 9  # spawn_key[0] of the corpus' random streams; simulate uses 0, 1 and 2
VERSION = 1  # bump when the rendering or sampling changes, so that caches are rebuilt
FIELDS = ("frames", "caption", "category_id", "direction_bin")


def _render(
    index: int, stimulus: StimulusConfig, clips_per_run: int, clip_fps: float, size: tuple[int, int], seed: int
) -> dict[str, np.ndarray]:
    plan = plan_run(
        clips_per_run, stimulus, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(CORPUS_STREAM, index)))
    )
    renderer = RunRenderer(plan, stimulus)
    per_clip = stimulus.frames_per_clip
    picks = source_indices(round(stimulus.clip_seconds * clip_fps), clip_fps, stimulus.fps)
    frames = np.empty((clips_per_run, len(picks), *size, 3), np.uint8)
    for clip in range(clips_per_run):
        movie = renderer.frames(clip * per_clip, (clip + 1) * per_clip)
        frames[clip] = np.stack([resize_center_crop(movie[k], *size) for k in picks])
    return {
        "frames": frames,
        "caption": np.array([c["caption"] for c in plan]),
        "category_id": np.array([c["category_id"] for c in plan], np.int64),
        "direction_bin": np.array([c["direction_bin"] for c in plan], np.int64),
    }


def build_corpus(
    stimulus: StimulusConfig,
    n_runs: int,
    clips_per_run: int,
    clip_fps: float,
    size: tuple[int, int],
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int = 2,
) -> dict[str, np.ndarray]:
    """Render (or load from the cache) ``n_runs`` movies of ``clips_per_run`` clips that no subject saw.

    Parameters
    ----------
    stimulus : StimulusConfig
        The subject's stimulus settings (``twin.json`` → ``config.stimulus``).
    n_runs, clips_per_run : int
        Movies and clips per movie (the subject's ``n_movie_trs`` keeps scene lengths as in its runs).
    clip_fps : float
        Frames per second sampled from each clip (the CC2017 reader's ``clips.fps``).
    size : (height, width)
        Frame size after resize and centre crop (the reader's ``clips.height`` and ``clips.width``).
    seed : int
    cache_dir : str or Path, optional
        Where the corpus is kept between runs (nothing is written when None).
    workers : int
        Processes that render movies in parallel.

    Returns
    -------
    dict
        ``frames`` (n_runs * clips_per_run, n_frames, height, width, 3) uint8, ``caption`` (str), ``category_id`` and
        ``direction_bin`` (int64), one row per clip.

    Raises
    ------
    ValueError
        If ``n_runs`` or ``clips_per_run`` is below 1, or ``clip_fps`` leaves fewer than 1 frame per clip.
    """
    if n_runs < 1 or clips_per_run < 1:
        raise ValueError(f"corpus: expected n_runs >= 1 and clips_per_run >= 1, got {n_runs} and {clips_per_run}.")
    if round(stimulus.clip_seconds * clip_fps) < 1:
        raise ValueError(
            f"corpus: clip_fps {clip_fps} gives no frame in a {stimulus.clip_seconds}-s clip; expected at least 1."
        )
    key = config_hash(asdict(stimulus), n_runs, clips_per_run, clip_fps, list(size), seed, VERSION)
    rendered: dict[str, np.ndarray] = {}

    def render() -> dict[str, np.ndarray]:
        if not rendered:  # once, however many of the arrays are missing from the cache
            start, parts = time.time(), []
            with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
                jobs = [pool.submit(_render, i, stimulus, clips_per_run, clip_fps, tuple(size), seed)
                        for i in range(n_runs)]  # fmt: skip
                for job in tqdm(jobs, desc="corpus", unit="movie"):
                    parts.append(job.result())
            rendered.update({name: np.concatenate([p[name] for p in parts]) for name in FIELDS})
            print(f"[corpus] {len(rendered['caption'])} clips rendered in {time.time() - start:.0f} s")
        return rendered

    if cache_dir is None:
        return dict(render())
    cache = FeatureCache(cache_dir)  # atomic .npy files, read back memory-mapped
    return {name: cache.get(f"corpus-{key}", "simulator", name, "train", lambda name=name: render()[name])
            for name in FIELDS}  # fmt: skip
