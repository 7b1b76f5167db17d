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
