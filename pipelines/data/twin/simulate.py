"""Simulate a subject and write it in the CC2017 layout, with a ground-truth sidecar.

``python -m pipelines simulate --preset {tiny,demo,cc2017} --out DIR [--seed S]`` writes::

    DIR/stimuli/seg{n}.mp4, test{n}.mp4                                   H.264 movies
    DIR/subject1/fmri/{seg|test}{n}/cifti/{seg|test}{n}_{r}_Atlas.dtseries.nii   CIFTI-2, 91,282 grayordinates
    DIR/groundtruth/twin.json              preset, seed, config, categories, backgrounds, roles, runs
    DIR/groundtruth/tuning.npz             per-grayordinate role and tuning (brain.BrainTuning)
    DIR/groundtruth/clips/{run}.json       per-clip plan: category, caption, direction, scene parameters
    DIR/groundtruth/features/{run}.npz     per-TR stimulus features the brain was driven by

Runs have the CC2017 structure: ``n_movie_trs`` volumes of movie, 1 leading volume (2 for test2 onwards,
as CC2017's 246-volume runs) and 4 trailing ones. The exact optical flow of every frame pair is recomputed from
the plan (:func:`pipelines.data.twin.groundtruth.exact_flow`) rather than stored.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pipelines import __version__
from pipelines.config import load_config, preset_path, to_dict
from pipelines.data import cifti
from pipelines.data.twin import brain as brain_lib
from pipelines.data.twin.stimuli import BACKGROUNDS, CATEGORIES, RunRenderer, StimulusConfig, plan_run
from pipelines.data.video import VideoWriter

FEATURE_GRID = 8  # structure features in the sidecar: 8 x 8 cells
FEATURE_MOTION_GRID = 4  # motion features in the sidecar: 4 x 4 cells


@dataclass(frozen=True)
class TwinConfig:
    """What to simulate: run counts and lengths, the stimulus, the brain."""

    subject: int = 1  # written as subject{subject}/
    n_train_segments: int = 6  # seg1..segN
    n_test_runs: int = 2  # test1..testN
    n_movie_trs: int = 240  # TRs of movie per run (CC2017: 240 = 8 min)
    train_repeats: int = 2  # repeats per training segment (CC2017: 2)
    test_repeats: int = 5  # repeats per test run (CC2017: 10)
    tr: float = 2.0  # seconds per volume
    trailing_volumes: int = 4  # blank volumes after the movie (CC2017: 4)
    workers: int = 2  # processes that render runs in parallel
    crf: int = 18  # x264 quality of the stimulus movies
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    brain: brain_lib.BrainConfig = field(default_factory=brain_lib.BrainConfig)


def run_names(config: TwinConfig) -> list[str]:
    return [f"seg{i}" for i in range(1, config.n_train_segments + 1)] + [
        f"test{i}" for i in range(1, config.n_test_runs + 1)
    ]


def leading_volumes(name: str) -> int:
    """CC2017: training runs and test1 have 245 volumes (1 leading), test2–5 have 246 (2 leading)."""
    return 2 if name.startswith("test") and name != "test1" else 1


def _render_run(name: str, config: TwinConfig, seed: np.random.SeedSequence, out: Path) -> dict[str, np.ndarray]:
    """Plan, render and encode one movie; return the brain's stimulus features over the whole run."""
    stim, bcfg = config.stimulus, config.brain
    step = stim.fps / bcfg.sample_hz
    if abs(step - round(step)) > 1e-9:
        raise ValueError(f"stimulus.fps ({stim.fps}) must be a multiple of brain.sample_hz ({bcfg.sample_hz}).")
    step = int(round(step))
    plan = plan_run(config.n_movie_trs, stim, np.random.default_rng(seed))
    renderer = RunRenderer(plan, stim)
    lead = leading_volumes(name)
    n_volumes = lead + config.n_movie_trs + config.trailing_volumes
    per_tr = int(round(config.tr * bcfg.sample_hz))
    n_samples, offset = n_volumes * per_tr, lead * per_tr
    g, mg = bcfg.grid, bcfg.motion_grid
    structure = np.zeros((n_samples, brain_lib.N_CHANNELS, g, g), np.float32)
    motion = np.zeros((n_samples, bcfg.n_directions, mg, mg), np.float32)
    category = np.zeros((n_samples, len(CATEGORIES)), np.float32)
    background = np.zeros((n_samples, len(BACKGROUNDS)), np.float32)
    fpc = stim.frames_per_clip
    with VideoWriter(out / "stimuli" / f"{name}.mp4", stim.height, stim.width, stim.fps, config.crf) as writer:
        for clip, info in enumerate(plan):
            frames = renderer.frames(clip * fpc, (clip + 1) * fpc)
            writer.write(frames)
            times = np.arange(clip * fpc, (clip + 1) * fpc, step)
            rows = offset + times // step
            structure[rows] = brain_lib.structure_features(frames[::step], g)
            flows = np.stack([renderer.flow(int(t), mg, mg) for t in times])
            motion[rows] = brain_lib.motion_features(flows, bcfg.n_directions, stim.fps)
            visible = np.array([renderer.object_alpha(int(t), 16, 16).mean() for t in times])
            category[rows, info["category_id"]] = np.minimum(1.0, visible / 0.08)
            background[rows, BACKGROUNDS.index(info["background"])] = 1.0
    clips_dir = out / "groundtruth" / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    (clips_dir / f"{name}.json").write_text(json.dumps(plan, indent=1))
    features = {"structure": structure, "motion": motion, "category": category, "background": background}
    _save_tr_features(out / "groundtruth" / "features" / f"{name}.npz", features, offset, per_tr, config)
    return features


def _save_tr_features(path: Path, features: dict, offset: int, per_tr: int, config: TwinConfig) -> None:
    """Average the brain's stimulus features over each movie TR, on coarser grids (the encoding-model features)."""

    def per_movie_tr(x: np.ndarray) -> np.ndarray:
        x = x[offset : offset + config.n_movie_trs * per_tr]
        return x.reshape(config.n_movie_trs, per_tr, *x.shape[1:]).mean(axis=1)

    def pool(x: np.ndarray, cells: int) -> np.ndarray:
        n, c, g, _ = x.shape
        return x.reshape(n, c, cells, g // cells, cells, g // cells).mean(axis=(3, 5)).reshape(n, -1)

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        structure=pool(per_movie_tr(features["structure"]), FEATURE_GRID),
        motion=pool(per_movie_tr(features["motion"]), FEATURE_MOTION_GRID),
        category=per_movie_tr(features["category"]),
        background=per_movie_tr(features["background"]),
    )


def simulate(config: TwinConfig, out: str | Path, seed: int = 0, preset: str | None = None) -> Path:
    """Simulate a subject with ``config`` and write it under ``out`` (see the module docstring).

    Deterministic for a seed: the tuning, every run's stimulus and every repeat's noise draw from their own
    ``SeedSequence(seed, spawn_key=...)``.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if (out / "groundtruth" / "twin.json").exists():
        raise FileExistsError(f"{out} already holds a simulated subject; choose an empty --out or delete it first.")
    out.mkdir(parents=True, exist_ok=True)
    names = run_names(config)

    # Every random stream has its own fixed key, so adding runs or repeats leaves the others unchanged.
    def stream(*key: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(seed, spawn_key=key)

    start = time.time()

    # 1. Stimuli: plan, render, encode; collect the brain's stimulus features (runs in parallel).
    features = {}
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        jobs = {name: pool.submit(_render_run, name, config, stream(1, i), out) for i, name in enumerate(names)}
        for name in tqdm(names, desc="stimuli", unit="run"):
            features[name] = jobs[name].result()

    # 2. Brain: tuning, neural responses, BOLD signal; unit variance over the whole experiment.
    tuning = brain_lib.make_tuning(config.brain, len(CATEGORIES), len(BACKGROUNDS), np.random.default_rng(stream(0)))
    bold = {}
    for name in names:
        f = features.pop(name)
        neural = brain_lib.neural_response(
            tuning, config.brain, f["structure"], f["motion"], f["category"], f["background"]
        )
        n_volumes = leading_volumes(name) + config.n_movie_trs + config.trailing_volumes
        bold[name] = brain_lib.bold_signal(neural, config.brain, n_volumes, config.tr)
    centred = [b - b.mean(axis=1, keepdims=True) for b in bold.values()]
    signal_std = np.sqrt(np.mean(np.concatenate(centred, axis=1) ** 2, axis=1))

    # 3. fMRI: one noisy repeat per file, written as CIFTI-2 dense time series.
    files = [(i, name, r) for i, name in enumerate(names) for r in range(1, _repeats(name, config) + 1)]
    for i, name, r in tqdm(files, desc="fMRI", unit="file"):
        rng = np.random.default_rng(stream(2, i, r))
        data = brain_lib.noisy_run(tuning, config.brain, signal_std, bold[name], config.tr, rng)
        path = out / f"subject{config.subject}" / "fmri" / name / "cifti" / f"{name}_{r}_Atlas.dtseries.nii"
        cifti.write_dtseries(path, data, config.tr)

    # 4. Ground-truth sidecar.
    gt = out / "groundtruth"
    tuning.save(gt / "tuning.npz")
    meta = {
        "simulated": True,
        "generator": f"mindreel {__version__}",
        "preset": preset,
        "seed": seed,
        "config": to_dict(config),
        "roles": list(brain_lib.ROLES),
        "categories": list(CATEGORIES),
        "backgrounds": list(BACKGROUNDS),
        "runs": [
            {
                "name": name,
                "n_volumes": leading_volumes(name) + config.n_movie_trs + config.trailing_volumes,
                "leading_volumes": leading_volumes(name),
                "n_movie_trs": config.n_movie_trs,
                "repeats": _repeats(name, config),
            }
            for name in names
        ],
        "seconds": round(time.time() - start, 1),
    }
    (gt / "twin.json").write_text(json.dumps(meta, indent=2))
    return out


def _repeats(name: str, config: TwinConfig) -> int:
    return config.test_repeats if name.startswith("test") else config.train_repeats


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines simulate``: write a simulated subject in the CC2017 layout."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines simulate",
        description="Simulate a subject (stimuli with exact flow, a brain on HCP grayordinates) in the CC2017 layout.",
    )
    parser.add_argument(
        "--preset", default="demo", help="tiny (seconds; tests), demo (the embedded default), cc2017 (full scale)"
    )
    parser.add_argument("--config", help="a YAML file instead of a preset")
    parser.add_argument("--out", required=True, help="output folder (must not already hold a simulated subject)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "overrides", nargs="*", help="KEY=VALUE config overrides, e.g. n_train_segments=8 brain.snr_motion=0.6"
    )
    args = parser.parse_intermixed_args(argv)
    source = args.config or preset_path("twin", args.preset)
    config = load_config(TwinConfig, source, args.overrides)
    start = time.time()
    simulate(config, args.out, args.seed, preset=None if args.config else args.preset)
    print(f"Simulated subject written to {args.out} in {time.time() - start:.1f} s.")
    return 0
