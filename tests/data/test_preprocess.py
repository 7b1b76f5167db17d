"""pipelines.data.preprocess against independent references (numpy.polyfit, scipy.stats)."""

import numpy as np
import pytest
from scipy import stats

from pipelines.data import preprocess


@pytest.fixture
def runs():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 60)
    trend = 50 + 30 * t - 20 * t**2 + 9 * t**4
    return rng.standard_normal((60, 5)) + trend[:, None] * np.arange(1, 6)


def test_detrend_matches_polyfit_per_column(runs):
    t = np.linspace(0, 1, runs.shape[0])
    expected = np.stack([runs[:, j] - np.polyval(np.polyfit(t, runs[:, j], 4), t) for j in range(runs.shape[1])], 1)
    np.testing.assert_allclose(preprocess.polynomial_detrend(runs, 4), expected, atol=1e-4)


def test_detrend_removes_a_pure_polynomial_exactly():
    t = np.linspace(0, 1, 30)[:, None]
    assert np.abs(preprocess.polynomial_detrend(3 + 2 * t**3 - t**4, 4)).max() < 1e-5
    with pytest.raises(ValueError, match=r"order: expected 0 <= order < n_trs = 3, got 4"):
        preprocess.polynomial_detrend(np.zeros((3, 2)), 4)


def test_zscore_matches_scipy_and_zeroes_constant_columns(runs):
    x = runs.copy()
    x[:, 2] = 7.0
    out = preprocess.zscore(x)
    ref = stats.zscore(runs, axis=0)
    np.testing.assert_allclose(out[:, [0, 1, 3, 4]], ref[:, [0, 1, 3, 4]], atol=1e-5)
    assert np.all(out[:, 2] == 0)


def test_reliability_matches_scipy_ttest():
    rng = np.random.default_rng(0)
    r = np.clip(rng.normal(0.1, 0.1, (6, 50)), -0.9, 0.9)
    rel = preprocess.repeat_reliability(r)
    t, p = stats.ttest_1samp(np.arctanh(r), 0, axis=0, alternative="greater")
    np.testing.assert_allclose(rel.t, t)
    np.testing.assert_allclose(rel.p, p)
    np.testing.assert_allclose(rel.p_bonferroni, np.minimum(1, p * 50))
    two = preprocess.repeat_reliability(r, "two-sided")
    np.testing.assert_allclose(two.p, stats.ttest_1samp(np.arctanh(r), 0, axis=0).pvalue)
    with pytest.raises(ValueError, match=r"expected shape \(n_segments >= 2, n_voxels\), got \(1, 50\)"):
        preprocess.repeat_reliability(r[:1])


def test_pearson_columns_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    b[:, 1] += a[:, 1]
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(preprocess.pearson_columns(a, b), expected)
    assert preprocess.pearson_columns(np.ones((5, 1)), b[:5, :1])[0] == 0


def test_select_voxels_rules():
    t = np.array([5.0, 1.0, 9.0, 3.0])
    rel = preprocess.Reliability(
        r=np.zeros((2, 4)), t=t, p=np.zeros(4), p_bonferroni=np.array([0.001, 0.5, 1e-9, 0.02])
    )
    np.testing.assert_array_equal(preprocess.select_voxels(rel, "top_n", 2), [0, 2])
    np.testing.assert_array_equal(preprocess.select_voxels(rel, "p_value", p_threshold=0.05), [0, 2, 3])
    with pytest.raises(ValueError, match=r"n_voxels: expected 1..4, got 5"):
        preprocess.select_voxels(rel, "top_n", 5)
    with pytest.raises(ValueError, match=r"No voxel has Bonferroni p < 1e-12"):
        preprocess.select_voxels(rel, "p_value", p_threshold=1e-12)
    with pytest.raises(ValueError, match=r"rule: expected 'top_n' or 'p_value', got 'best'"):
        preprocess.select_voxels(rel, "best")


def test_hrf_shift_and_window():
    run = np.arange(10, dtype=float)[:, None] * np.ones((1, 2))
    x, clips = preprocess.hrf_align(run, 10, "shift", shift=2)
    np.testing.assert_array_equal(clips, np.arange(8))
    np.testing.assert_array_equal(x[:, 0], np.arange(2, 10))
    x, clips = preprocess.hrf_align(run, 10, "window", shift=0, before=2, after=2)
    np.testing.assert_array_equal(clips, np.arange(2, 8))
    assert x.shape == (6, 5, 2)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2, 3, 4])
    x, clips = preprocess.hrf_align(run, 10, "shift", shift=3, edge="clamp")
    assert len(clips) == 10 and x[-1, 0] == 9 and x[6, 0] == 9
    with pytest.raises(ValueError, match=r"mode: expected 'shift' or 'window', got 'lag'"):
        preprocess.hrf_align(run, 10, "lag")
    with pytest.raises(ValueError, match=r"edge: expected 'drop' or 'clamp', got 'wrap'"):
        preprocess.hrf_align(run, 10, "shift", edge="wrap")


def test_standardizer_uses_training_statistics_only():
    rng = np.random.default_rng(3)
    train, test = rng.normal(5, 2, (100, 3)), rng.normal(50, 9, (20, 3))
    scaler = preprocess.Standardizer.fit(train)
    np.testing.assert_allclose(scaler.mean, train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(scaler.transform(test), (test - train.mean(0)) / train.std(0), rtol=1e-5)
    window = rng.normal(size=(10, 5, 3))
    np.testing.assert_allclose(preprocess.Standardizer.fit(window).mean, window.reshape(-1, 3).mean(0), rtol=1e-5)
