"""Read a simulated subject's ground-truth sidecar: roles and tuning, clip plans, exact flow, stimulus features.

Also the encoding model that measures the simulated signal-to-noise ratio: ridge regression from the simulator's
own per-TR stimulus features (delayed by 1–3 TRs) to every encoding-role grayordinate, fitted on the training
segments, its penalty chosen on the validation segments, scored by Pearson r on the test runs.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data import cc2017
from pipelines.data.preprocess import pearson_columns
from pipelines.data.twin.brain import ROLES, BrainTuning
from pipelines.data.twin.stimuli import RunRenderer, StimulusConfig

FEATURE_KEYS = ("structure", "motion", "category", "background")


def is_simulated(root: str | Path) -> bool:
    """True when ``root`` holds a simulated subject (it has ``groundtruth/twin.json``)."""
    return (Path(root) / "groundtruth" / "twin.json").is_file()


def load_meta(root: str | Path) -> dict[str, Any]:
    """The sidecar's ``twin.json``: preset, seed, config, categories, backgrounds, roles, runs."""
    path = Path(root) / "groundtruth" / "twin.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {root} is not a simulated subject (no ground truth).")
    return json.loads(path.read_text())


def load_tuning(root: str | Path) -> BrainTuning:
    """Per-grayordinate role and tuning (arrays of shape (91282, ...))."""
    return BrainTuning.load(Path(root) / "groundtruth" / "tuning.npz")


def load_plan(root: str | Path, run: str) -> list[dict[str, Any]]:
    """Per-clip plan of a run: category, caption, direction, scene parameters."""
    path = Path(root) / "groundtruth" / "clips" / f"{run}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected the plan of run {run!r}.")
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=8)
def _renderer(root: str, run: str) -> RunRenderer:
    from pipelines.config import from_dict

    stimulus = from_dict(StimulusConfig, load_meta(root)["config"]["stimulus"])
    return RunRenderer(load_plan(root, run), stimulus)


def exact_flow(
    root: str | Path, run: str, frame: int, height: int | None = None, width: int | None = None, step: int = 1
) -> np.ndarray:
    """Exact forward optical flow from movie frame ``frame`` to ``frame + step`` of ``run``.

    Returns
    -------
    array of shape (height, width, 2), float32
        dx, dy in pixels of the requested grid (default: the movie's size); all NaN across a scene cut.
    """
    return _renderer(str(Path(root).resolve()), run).flow(frame, height, width, step)


def load_features(root: str | Path, run: str) -> dict[str, np.ndarray]:
    """Per-TR stimulus features of a run's movie: arrays of shape (n_movie_trs, n_features) by kind."""
    path = Path(root) / "groundtruth" / "features" / f"{run}.npz"
    with np.load(path) as f:
        return {k: f[k] for k in FEATURE_KEYS}


def _design(root: Path, run: str, delays: tuple[int, ...]) -> np.ndarray:
    f = load_features(root, run)
    x = np.concatenate([f[k] for k in FEATURE_KEYS], axis=1)
    return np.concatenate([np.roll(x, d, axis=0) * (np.arange(len(x)) >= d)[:, None] for d in delays], axis=1)


def _ridge_predict(x_fit, y_fit, x_new, alphas):
    """Ridge predictions for several penalties at once, through one SVD."""
    u, s, vt = np.linalg.svd(x_fit, full_matrices=False)
    uty = u.T @ y_fit
    return [x_new @ (vt.T @ ((s / (s**2 + a))[:, None] * uty)) for a in alphas]


def encoding_performance(
    root: str | Path,
    config: cc2017.CC2017Config | None = None,
    delays: tuple[int, ...] = (1, 2, 3),
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5),
) -> dict[str, Any]:
    """Test-set Pearson r of a ridge encoding model over the encoding-role grayordinates.

    Uses the CC2017 reader's per-run preprocessing (trim, detrend, z-score) and repeat averaging; the feature
    standardisation and the penalty come from the training and validation segments only.

    Returns
    -------
    dict
        ``encoding_r_median`` (all encoding roles), ``encoding_r_median_by_role``, ``encoding_alpha``.
    """
    root = Path(root)
    config = config or cc2017.CC2017Config()
    train_runs, test_runs = cc2017.discover_runs(root, config)
    n_fit = len(train_runs) - config.n_val_segments
    role = load_tuning(root).role

    def run_data(run: cc2017.Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Delayed features, repeat-averaged encoding-voxel data and the role of each column."""
        reps, gray = [], None
        for path in run.repeats:
            data, _, gray = cc2017.load_run(path, run, config)
            reps.append(data)
        keep = role[gray] > 0
        return _design(root, run.name, delays), np.mean(reps, axis=0)[:, keep], role[gray][keep]

    parts = {"fit": train_runs[:n_fit], "val": train_runs[n_fit:], "test": test_runs}
    loaded = {k: [run_data(r) for r in runs] for k, runs in parts.items()}
    x = {k: np.concatenate([d[0] for d in v]) for k, v in loaded.items() if v}
    y = {k: np.concatenate([d[1] for d in v]) for k, v in loaded.items() if v}
    roles = loaded["test"][0][2]
    mean, std = x["fit"].mean(0), x["fit"].std(0) + 1e-6
    x = {k: (v - mean) / std for k, v in x.items()}
    if "val" in x:
        scores = [np.median(pearson_columns(p, y["val"])) for p in _ridge_predict(x["fit"], y["fit"], x["val"], alphas)]
        alpha = alphas[int(np.argmax(scores))]
        x_fit, y_fit = np.concatenate([x["fit"], x["val"]]), np.concatenate([y["fit"], y["val"]])
    else:
        alpha, x_fit, y_fit = alphas[len(alphas) // 2], x["fit"], y["fit"]
    r = pearson_columns(_ridge_predict(x_fit, y_fit, x["test"], [alpha])[0], y["test"])
    by_role = {ROLES[k]: float(np.median(r[roles == k])) for k in np.unique(roles)}
    return {"encoding_r_median": float(np.median(r)), "encoding_r_median_by_role": by_role, "encoding_alpha": alpha}
