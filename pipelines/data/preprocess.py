"""fMRI preprocessing of the published CC2017 protocol (shared/reference/methods_and_protocols.md B.2–B.5).

Pure functions on arrays of shape (n_trs, n_voxels). Order in the readers: trim volumes → keep cortex →
polynomial detrend → z-score within the run → average repeats → reliability-based selection → HRF alignment →
per-voxel standardisation fitted on training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats


def polynomial_detrend(data: np.ndarray, order: int = 4) -> np.ndarray:
    """Remove a polynomial trend of degree ``order`` from every column.

    Equivalent to subtracting ``np.polyval(np.polyfit(t, x, order), t)`` with t evenly spaced on [0, 1] (the
    Mind-Animator re-implementation of Wen's MATLAB), but solved once for all columns with a Legendre basis,
    which is better conditioned.

    Parameters
    ----------
    data : array of shape (n_trs, n_voxels)
    order : int
        Polynomial degree (4 in the published protocol); must be < n_trs.

    Returns
    -------
    array of shape (n_trs, n_voxels), float32
    """
    n_trs = data.shape[0]
    if not 0 <= order < n_trs:
        raise ValueError(f"order: expected 0 <= order < n_trs = {n_trs}, got {order}.")
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n_trs), order)
    x = np.asarray(data, dtype=np.float64)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return (x - basis @ coef).astype(np.float32)


def zscore(data: np.ndarray) -> np.ndarray:
    """Z-score every column over time (population std); constant columns become 0.

    Parameters
    ----------
    data : array of shape (n_trs, n_voxels)

    Returns
    -------
    array of shape (n_trs, n_voxels), float32
    """
    x = np.asarray(data, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    out = np.zeros_like(x)
    ok = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    out[:, ok] = (x[:, ok] - mean[ok]) / std[ok]
    return out.astype(np.float32)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of two arrays of shape (n_trs, n_voxels); 0 where either is constant."""
    a = np.asarray(a, np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, np.float64) - np.mean(b, axis=0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    r = np.zeros(a.shape[1])
    ok = denom > 0
    r[ok] = (a * b).sum(0)[ok] / denom[ok]
    return r


@dataclass(frozen=True)
class Reliability:
    """Test–retest reliability of every voxel across training segments."""

    r: np.ndarray  # array of shape (n_segments, n_voxels): repeat-1 vs repeat-2 Pearson r per segment
    t: np.ndarray  # array of shape (n_voxels,): one-sample t of the Fisher z values against 0
    p: np.ndarray  # array of shape (n_voxels,): uncorrected p of that t-test
    p_bonferroni: np.ndarray  # array of shape (n_voxels,): min(1, p x n_voxels)


def repeat_reliability(
    r_per_segment: np.ndarray, alternative: Literal["greater", "two-sided"] = "greater"
) -> Reliability:
    """Wen et al.'s reproducibility statistics from the per-segment repeat correlations.

    Fisher z = atanh(r) per segment, a one-sample t-test of the z values against 0 per voxel, and a Bonferroni
    correction over voxels. ``alternative="greater"`` (default) tests for positive reliability; the MATLAB
    original uses ``ttest``'s two-sided default, which only differs for voxels with negative test–retest r.

    Parameters
    ----------
    r_per_segment : array of shape (n_segments, n_voxels)
    alternative : {"greater", "two-sided"}

    Raises
    ------
    ValueError
        With fewer than 2 segments (no t-test is possible).
    """
    r = np.asarray(r_per_segment, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(
            f"r_per_segment: expected shape (n_segments >= 2, n_voxels), got {r.shape}; "
            "reliability needs at least two training segments with two repeats each."
        )
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    with np.errstate(invalid="ignore", divide="ignore"):
        t, p = stats.ttest_1samp(z, 0.0, axis=0, alternative=alternative)
    t, p = np.nan_to_num(t, nan=0.0), np.nan_to_num(p, nan=1.0)
    return Reliability(r=r, t=t, p=p, p_bonferroni=np.minimum(1.0, p * r.shape[1]))


def select_voxels(
    reliability: Reliability,
    rule: Literal["top_n", "p_value"],
    n_voxels: int = 4500,
    p_threshold: float = 0.01,
) -> np.ndarray:
    """Indices of the selected voxels, in ascending order.

    ``top_n`` keeps the ``n_voxels`` largest t (the smallest adjusted p without ties at p = 0; Mind-Animator
    keeps 4500); ``p_value`` keeps Bonferroni p < ``p_threshold`` (0.01 as in Wen / MinD-Video, 0.05 as in
    NeuroClips).

    Raises
    ------
    ValueError
        If the rule is unknown, ``n_voxels`` exceeds the number of voxels, or no voxel passes.
    """
    n_total = reliability.t.shape[0]
    if rule == "top_n":
        if not 0 < n_voxels <= n_total:
            raise ValueError(f"n_voxels: expected 1..{n_total}, got {n_voxels}.")
        chosen = np.argsort(-reliability.t, kind="stable")[:n_voxels]
    elif rule == "p_value":
        chosen = np.flatnonzero(reliability.p_bonferroni < p_threshold)
        if chosen.size == 0:
            raise ValueError(
                f"No voxel has Bonferroni p < {p_threshold} (smallest: {reliability.p_bonferroni.min():.3g}); "
                "use rule top_n, a larger p_threshold, or more training segments."
            )
    else:
        raise ValueError(f"rule: expected 'top_n' or 'p_value', got {rule!r}.")
    return np.sort(chosen)


def hrf_align(
    run: np.ndarray,
    n_clips: int,
    mode: Literal["shift", "window"],
    shift: int = 2,
    before: int = 2,
    after: int = 2,
    edge: Literal["drop", "clamp"] = "drop",
) -> tuple[np.ndarray, np.ndarray]:
    """Pair each 2-s clip j of a run with the fMRI volumes that respond to it.

    ``shift`` pairs clip j with volume j + shift (NeuroClips: 2 TRs = 4 s; Mind-Animator's code: 0).
    ``window`` pairs it with volumes j + shift − before … j + shift + after (BrainNRDS: shift 0, ±2).
    Clips whose volumes fall outside the run are dropped (``edge="drop"``) or take the nearest volume
    (``edge="clamp"``, as MinD-Video repeats the last TR).

    Parameters
    ----------
    run : array of shape (n_trs, n_voxels)
        Trimmed volumes; volume j was acquired while clip j started.
    n_clips : int

    Returns
    -------
    fmri : array of shape (n_kept, n_voxels) for ``shift``, (n_kept, before + after + 1, n_voxels) for ``window``
    clips : array of shape (n_kept,), int
        The clip index of each row.
    """
    n_trs = run.shape[0]
    offsets = np.array([shift]) if mode == "shift" else np.arange(shift - before, shift + after + 1)
    if mode not in ("shift", "window"):
        raise ValueError(f"mode: expected 'shift' or 'window', got {mode!r}.")
    if edge not in ("drop", "clamp"):
        raise ValueError(f"edge: expected 'drop' or 'clamp', got {edge!r}.")
    rows = np.arange(n_clips)[:, None] + offsets[None, :]
    if edge == "drop":
        keep = np.all((rows >= 0) & (rows < n_trs), axis=1)
    else:
        keep = np.ones(n_clips, bool)
        rows = np.clip(rows, 0, n_trs - 1)
    clips = np.flatnonzero(keep)
    out = run[rows[keep]]
    return (out[:, 0] if mode == "shift" else out), clips


@dataclass(frozen=True)
class Standardizer:
    """Per-voxel mean and std fitted on training rows only, applied to every split."""

    mean: np.ndarray  # array of shape (n_voxels,)
    std: np.ndarray  # array of shape (n_voxels,)

    @classmethod
    def fit(cls, train: np.ndarray) -> Standardizer:
        """Fit on training rows: array of shape (n_samples, ..., n_voxels); statistics over all but the last axis."""
        x = np.asarray(train, np.float64).reshape(-1, train.shape[-1])
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0).astype(np.float32), std=np.where(std > 1e-12, std, 1.0).astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)
