"""Significance tests of the evaluation protocols."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShuffleTestResult:
    """Outcome of :func:`shuffle_test`."""

    observed: float  # the metric with the frames in their order
    p_values: tuple[float, ...]  # one per repeat: fraction of permutations that scored better than ``observed``
    p_mean: float
    p_std: float


def shuffle_test(
    score: Callable[[np.ndarray], float],
    n_frames: int,
    n_permutations: int = 100,
    n_repeats: int = 5,
    higher_is_better: bool = True,
    seed: int = 0,
) -> ShuffleTestResult:
    """Mind-Animator's shuffle (permutation) test of frame order (reference A.9).

    ``score(order)`` is the mean metric over clips when the predicted frames are taken in ``order`` (one
    permutation of ``range(n_frames)`` shared by every clip, as in the reference). For each repeat, ``n_permutations``
    random orders are drawn and p is the fraction that score strictly better than the original order; a low p
    means the frame order carries motion consistent with the ground truth. The reference uses 100 permutations ×
    5 repeats and reports mean ± std of p.

    Raises
    ------
    ValueError
        For fewer than 2 frames, or non-positive counts.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames: expected an integer >= 2, got {n_frames!r}.")
    if n_permutations < 1 or n_repeats < 1:
        raise ValueError(f"n_permutations, n_repeats: expected positive counts, got {n_permutations} and {n_repeats}.")
    observed = float(score(np.arange(n_frames)))
    rng = np.random.default_rng(seed)
    p_values = []
    for _ in range(n_repeats):
        shuffled = np.array([score(rng.permutation(n_frames)) for _ in range(n_permutations)])
        better = shuffled > observed if higher_is_better else shuffled < observed
        p_values.append(float(better.mean()))
    return ShuffleTestResult(observed, tuple(p_values), float(np.mean(p_values)), float(np.std(p_values)))


@dataclass(frozen=True)
class MethodComparison:
    """Outcome of :func:`compare_methods` (``a`` minus ``b``; positive: ``a`` scores higher)."""

    mean_difference: float  # mean over clips of a − b
    bootstrap_means: tuple[tuple[float, ...], tuple[float, ...]]  # per method, one mean per bootstrap resample
    bootstrap_p: float  # Wilcoxon signed-rank test of the bootstrap means (Mind-Animator's published test)
    paired_p: float  # Wilcoxon signed-rank test of the per-clip values themselves


def compare_methods(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 100, seed: int = 0) -> MethodComparison:
    """Compare two methods' per-clip scores on the same clips, as Mind-Animator does and as a paired test.

    Mind-Animator (reference A.9, MA-R ``bootstrap_with_wilcoxon.py``) draws 100 bootstrap resamples of each
    method's per-clip values and runs a Wilcoxon signed-rank test on the two lists of 100 bootstrap means. Here
    both methods share each resample's clip indices (the clips are paired; independent resamples would add
    noise unrelated to the methods). Bootstrap means are not independent observations, so ``bootstrap_p`` shrinks
    as ``n_bootstrap`` grows whatever the effect; it is reported to compare with the paper, and ``paired_p`` — the
    signed-rank test of the per-clip differences — is the one to trust.

    Parameters
    ----------
    a, b : arrays of shape (n_clips,)
        One metric per clip for two methods, clip i being the same clip in both.

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than 2 clips, or n_bootstrap < 1.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"a, b: expected two arrays of one shape (n_clips >= 2,), got {a.shape} and {b.shape}.")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap: expected a positive count, got {n_bootstrap}.")
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(a), size=(n_bootstrap, len(a)))
    means_a, means_b = a[resamples].mean(axis=1), b[resamples].mean(axis=1)

    def signed_rank_p(x: np.ndarray, y: np.ndarray) -> float:
        return 1.0 if np.all(x == y) else float(wilcoxon(x, y).pvalue)  # no differences: no evidence at all

    return MethodComparison(
        mean_difference=float((a - b).mean()),
        bootstrap_means=(tuple(means_a.tolist()), tuple(means_b.tolist())),
        bootstrap_p=signed_rank_p(means_a, means_b),
        paired_p=signed_rank_p(a, b),
    )


@dataclass(frozen=True)
class AgreementTestResult:
    """Outcome of :func:`agreement_test`."""

    accuracy: float  # share of clips whose predicted label equals the true one
    p: float  # (1 + permutations with accuracy >= observed) / (1 + n_permutations)
    null_mean: float  # mean accuracy under shuffled pairing: chance given both label distributions
    n_permutations: int


def agreement_test(
    predicted: np.ndarray, truth: np.ndarray, n_permutations: int = 1000, seed: int = 0
) -> AgreementTestResult:
    """Do predicted labels agree with the true ones above chance? A permutation test of the pairing.

    Shuffling which prediction goes with which clip keeps both label distributions, so the null accounts for
    unbalanced labels (a predictor that always says "rightwards" scores the share of rightward clips, not 1/8).

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than 2 clips, or n_permutations < 1.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.ndim != 1 or predicted.shape != truth.shape or len(truth) < 2:
        raise ValueError(
            f"predicted, truth: expected two label arrays of one shape (n_clips >= 2,), got {predicted.shape} and "
            f"{truth.shape}."
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations: expected a positive count, got {n_permutations}.")
    observed = float((predicted == truth).mean())
    rng = np.random.default_rng(seed)
    null = np.array([(predicted[rng.permutation(len(truth))] == truth).mean() for _ in range(n_permutations)])
    return AgreementTestResult(
        accuracy=observed,
        p=float((1 + (null >= observed).sum()) / (1 + n_permutations)),
        null_mean=float(null.mean()),
        n_permutations=n_permutations,
    )
