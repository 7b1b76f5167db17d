"""pipelines.evaluation.significance on constructed cases whose answers are known in advance."""

import numpy as np
import pytest

from pipelines.evaluation.significance import MethodComparison, ShuffleTestResult, compare_methods, shuffle_test


def displacement(order: np.ndarray) -> float:
    """How far ``order`` is from the identity: 0 only there, positive for every other permutation."""
    return float(np.abs(np.asarray(order) - np.arange(len(order))).sum())


def identity_fraction(n_frames, n_permutations, n_repeats, seed):
    """Per repeat, the fraction of drawn orders that are the identity, drawing as shuffle_test documents."""
    rng = np.random.default_rng(seed)
    return [
        np.mean([np.array_equal(rng.permutation(n_frames), np.arange(n_frames)) for _ in range(n_permutations)])
        for _ in range(n_repeats)
    ]


def test_a_score_maximal_only_at_the_identity_gives_p_zero():
    result = shuffle_test(lambda order: -displacement(order), n_frames=6, n_permutations=50, n_repeats=3)
    assert isinstance(result, ShuffleTestResult)
    assert result.observed == 0.0
    assert result.p_values == (0.0, 0.0, 0.0) and result.p_mean == 0.0 and result.p_std == 0.0


def test_ties_are_not_better():
    result = shuffle_test(lambda order: 0.25, n_frames=4, n_permutations=20, n_repeats=2)
    assert result.observed == 0.25 and result.p_values == (0.0, 0.0)


def test_an_identity_that_scores_worst_gives_p_one_minus_the_identity_draws():
    # 3 frames: 1 in 6 draws is the identity itself, which ties (not better); every other draw is better
    result = shuffle_test(displacement, n_frames=3, n_permutations=60, n_repeats=4, seed=5)
    expected = [1.0 - f for f in identity_fraction(3, 60, 4, seed=5)]
    assert 0.0 < min(expected) and max(expected) < 1.0  # the draws did include the identity: the ties matter
    np.testing.assert_allclose(result.p_values, expected, rtol=0, atol=1e-12)
    assert result.p_mean == pytest.approx(np.mean(expected)) and result.p_std == pytest.approx(np.std(expected))
    assert result.p_mean >= 0.5


def test_lower_is_better_flips_the_direction():
    low = shuffle_test(displacement, n_frames=5, n_permutations=40, n_repeats=2, higher_is_better=False)
    assert low.p_values == (0.0, 0.0)
    high = shuffle_test(lambda order: -displacement(order), 3, 60, 4, higher_is_better=False, seed=5)
    expected = [1.0 - f for f in identity_fraction(3, 60, 4, seed=5)]
    np.testing.assert_allclose(high.p_values, expected, rtol=0, atol=1e-12)


def test_one_seed_gives_one_result_and_seeds_differ():
    def score(order):
        return float(order[1] - order[0])  # 1 at the identity; 6 of the 20 (first, second) pairs score better

    first = shuffle_test(score, n_frames=5, n_permutations=30, n_repeats=3, seed=11)
    assert shuffle_test(score, n_frames=5, n_permutations=30, n_repeats=3, seed=11) == first
    assert shuffle_test(score, n_frames=5, n_permutations=30, n_repeats=3, seed=12).p_values != first.p_values


@pytest.mark.parametrize(("n_permutations", "n_repeats"), [(1, 1), (7, 3), (100, 5)])
def test_score_is_called_once_per_order(n_permutations, n_repeats):
    orders = []

    def score(order):
        orders.append(np.array(order))
        return 0.0

    shuffle_test(score, n_frames=4, n_permutations=n_permutations, n_repeats=n_repeats)
    assert len(orders) == 1 + n_permutations * n_repeats
    np.testing.assert_array_equal(orders[0], np.arange(4))  # the observed score is of the original order
    assert all(sorted(o.tolist()) == [0, 1, 2, 3] for o in orders)  # every order is a permutation of the frames


@pytest.mark.parametrize("n_frames", [1, 0, -3, 2.0, True, "4"])
def test_too_few_or_non_integer_frames_are_rejected(n_frames):
    with pytest.raises(ValueError, match=rf"n_frames: expected an integer >= 2, got {n_frames!r}\."):
        shuffle_test(lambda order: 0.0, n_frames=n_frames)


@pytest.mark.parametrize(("n_permutations", "n_repeats"), [(0, 5), (100, 0), (-1, -2)])
def test_non_positive_counts_are_rejected(n_permutations, n_repeats):
    calls = []
    with pytest.raises(
        ValueError,
        match=rf"n_permutations, n_repeats: expected positive counts, got {n_permutations} and {n_repeats}\.",
    ):
        shuffle_test(calls.append, n_frames=3, n_permutations=n_permutations, n_repeats=n_repeats)
    assert calls == []  # checked before any scoring


# --- compare_methods ---------------------------------------------------------------------------------------------


def test_a_constant_improvement_is_significant_both_ways():
    b = np.random.default_rng(0).normal(size=60)
    result = compare_methods(b + 0.5 + np.linspace(0, 0.01, 60), b)
    assert isinstance(result, MethodComparison)
    assert result.mean_difference == pytest.approx(0.505)
    assert result.paired_p < 1e-9 and result.bootstrap_p < 1e-9
    assert len(result.bootstrap_means[0]) == 100 == len(result.bootstrap_means[1])


def test_bootstrap_means_are_paired_means_of_resampled_clips():
    a, b = np.arange(10.0), np.arange(10.0)[::-1].copy()
    result = compare_methods(a, b, n_bootstrap=5, seed=3)
    idx = np.random.default_rng(3).integers(0, 10, size=(5, 10))  # the documented draws: one index set per resample
    np.testing.assert_allclose(result.bootstrap_means[0], a[idx].mean(axis=1))
    np.testing.assert_allclose(result.bootstrap_means[1], b[idx].mean(axis=1))


def test_identical_methods_give_p_one_and_noise_is_not_significant():
    a = np.random.default_rng(1).normal(size=80)
    same = compare_methods(a, a.copy())
    assert same.paired_p == 1.0 and same.bootstrap_p == 1.0 and same.mean_difference == 0.0
    rng = np.random.default_rng(2)
    null = [compare_methods(rng.normal(size=80), rng.normal(size=80), seed=s).paired_p for s in range(200)]
    assert 0.02 < np.mean(np.array(null) < 0.05) < 0.09  # the paired test keeps its level under the null


def test_compare_methods_errors():
    with pytest.raises(
        ValueError, match=r"a, b: expected two arrays of one shape \(n_clips >= 2,\), got \(3,\) and \(4,\)"
    ):
        compare_methods(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"got \(1,\) and \(1,\)"):
        compare_methods(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match=r"n_bootstrap: expected a positive count, got 0"):
        compare_methods(np.zeros(3), np.ones(3), n_bootstrap=0)


def test_agreement_test_perfect_random_and_unbalanced():
    from pipelines.evaluation.significance import agreement_test

    truth = np.arange(40) % 8
    perfect = agreement_test(truth, truth, n_permutations=500)
    assert perfect.accuracy == 1.0 and perfect.p == pytest.approx(1 / 501)
    assert perfect.null_mean == pytest.approx(1 / 8, abs=0.02)
    rng = np.random.default_rng(1)
    assert agreement_test(rng.integers(0, 8, 40), truth, n_permutations=500).p > 0.05
    labels = np.array([0] * 30 + [1] * 10)
    constant = agreement_test(np.zeros(40, int), labels, n_permutations=50)
    assert constant.accuracy == 0.75 and constant.null_mean == pytest.approx(0.75) and constant.p == 1.0


@pytest.mark.parametrize(
    ("predicted", "truth", "n", "message"),
    [(np.zeros(3), np.zeros(4), 10, "one shape"), (np.zeros(1), np.zeros(1), 10, "n_clips >= 2"),
     (np.zeros(3), np.zeros(3), 0, "positive count")],
)  # fmt: skip
def test_agreement_test_errors(predicted, truth, n, message):
    from pipelines.evaluation.significance import agreement_test

    with pytest.raises(ValueError, match=message):
        agreement_test(predicted, truth, n_permutations=n)
