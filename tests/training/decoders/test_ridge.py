"""pipelines.training.decoders.ridge: the dual-form solver against scikit-learn, penalty choice, input checks."""

import re

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from pipelines.training.decoders.ridge import fit_ridge

ALPHAS = tuple(10.0**k for k in range(-3, 5))


def standardise(x, x_train):
    """Standardise ``x`` with the training mean and standard deviation (1 where constant), as the module does."""
    scale = x_train.std(axis=0)
    return (x - x_train.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def linear_problem(n_train, n_features, n_targets=3, noise=0.0, seed=0):
    """Train, val and test splits of y = x W (+ noise), inputs with non-zero means and unequal scales."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((n_features, n_targets))
    scales = rng.uniform(0.5, 3.0, n_features)
    offsets = rng.uniform(-2.0, 2.0, n_features)

    def split(n):
        x = rng.standard_normal((n, n_features)) * scales + offsets
        return x, x @ weights + 1.5 + noise * rng.standard_normal((n, n_targets))

    return split(n_train), split(8), split(5)


@pytest.mark.parametrize(("n_train", "n_features"), [(10, 40), (40, 6)], ids=["n<p", "n>p"])
@pytest.mark.parametrize("alpha", [0.01, 3.0, 200.0])
def test_matches_sklearn_ridge_on_standardised_inputs(n_train, n_features, alpha):
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(n_train, n_features, noise=0.3)
    model = fit_ridge(x, y, x_val, y_val, alphas=(alpha,), relative=False)
    reference = Ridge(alpha=alpha).fit(standardise(x, x), y)
    assert model.alpha == alpha
    for inputs in (x, x_val, x_test):
        np.testing.assert_allclose(
            model.predict(inputs), reference.predict(standardise(inputs, x)), rtol=1e-6, atol=1e-9
        )
    # the primal weights of the dual solution: w = Zᵀ · dual
    np.testing.assert_allclose(model.x_train.T @ model.dual, reference.coef_.T, rtol=1e-6, atol=1e-9)
    expected_mse = np.mean((reference.predict(standardise(x_val, x)) - y_val) ** 2)
    assert model.validation_mse[alpha] == pytest.approx(expected_mse, rel=1e-6)


def test_linear_is_the_fitted_map_on_raw_inputs():
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(10, 40, noise=0.3)
    model = fit_ridge(x, y, x_val, y_val, alphas=(3.0,), relative=False)
    weight, bias = model.linear()
    assert weight.shape == (3, 40) and bias.shape == (3,)
    # scikit-learn's coefficients on standardised inputs, un-standardised by hand
    reference = Ridge(alpha=3.0).fit(standardise(x, x), y)
    scale = x.std(axis=0)
    np.testing.assert_allclose(weight, reference.coef_ / scale, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        x_test @ weight.T + bias, reference.predict(standardise(x_test, x)), rtol=1e-6, atol=1e-9
    )


def test_factors_multiply_to_the_linear_map():
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(10, 40, noise=0.3)
    model = fit_ridge(x, y, x_val, y_val, alphas=(3.0,), relative=False)
    (left, right), bias = model.factors()
    weight, expected_bias = model.linear()
    assert left.shape == (3, 10) and right.shape == (10, 40)  # rank at most the number of training samples
    np.testing.assert_allclose(left @ right, weight, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x_test @ (left @ right).T + bias, model.predict(x_test), rtol=1e-9, atol=1e-9)


def test_relative_penalty_is_a_multiple_of_the_number_of_standardised_features():
    # trace(Z Zᵀ) / n = p for standardised columns, so the mean kernel eigenvalue is p: α_rel = 0.5 ↔ α = 0.5 p
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(12, 30, noise=0.3)
    model = fit_ridge(x, y, x_val, y_val, alphas=(0.5,))
    reference = Ridge(alpha=0.5 * 30).fit(standardise(x, x), y)
    assert model.alpha == 0.5
    np.testing.assert_allclose(model.predict(x_test), reference.predict(standardise(x_test, x)), rtol=1e-6)


def test_pure_noise_targets_choose_the_largest_penalty():
    rng = np.random.default_rng(1)
    x, x_val = rng.standard_normal((30, 50)), rng.standard_normal((30, 50))
    y, y_val = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    model = fit_ridge(x, y, x_val, y_val, alphas=ALPHAS)
    assert sorted(model.validation_mse) == sorted(ALPHAS)
    assert model.alpha == max(ALPHAS), f"expected the largest penalty {max(ALPHAS)}, got {model.validation_mse}"
    assert model.validation_mse[max(ALPHAS)] < model.validation_mse[min(ALPHAS)]


def test_noiseless_linear_targets_choose_the_smallest_penalty():
    (x, y), (x_val, y_val), (x_test, y_test) = linear_problem(60, 8)
    model = fit_ridge(x, y, x_val, y_val, alphas=ALPHAS)
    assert model.alpha == min(ALPHAS), f"expected the smallest penalty {min(ALPHAS)}, got {model.validation_mse}"
    assert model.validation_mse[model.alpha] == min(model.validation_mse.values())
    np.testing.assert_allclose(model.predict(x_test), y_test, atol=1e-2)


def test_chosen_penalty_has_the_lowest_validation_mse():
    (x, y), (x_val, y_val), _ = linear_problem(15, 25, noise=2.0, seed=3)
    model = fit_ridge(x, y, x_val, y_val, alphas=ALPHAS, relative=False)
    for alpha, mse in model.validation_mse.items():
        prediction = Ridge(alpha=alpha).fit(standardise(x, x), y).predict(standardise(x_val, x))
        assert mse == pytest.approx(np.mean((prediction - y_val) ** 2), rel=1e-6)
    assert model.alpha == min(model.validation_mse, key=model.validation_mse.get)


def test_constant_columns_give_finite_predictions():
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(10, 4)
    constant = np.c_[x, np.zeros(10), np.ones(10)]
    model = fit_ridge(constant, y, np.c_[x_val, np.zeros(8), np.ones(8)], y_val, alphas=(0.1,), relative=False)
    assert np.isfinite(model.x_scale).all() and np.isfinite(model.dual).all()
    plain = fit_ridge(x, y, x_val, y_val, alphas=(0.1,), relative=False)
    # a column that is constant in training carries no information, whatever its value at prediction time
    shifted = np.c_[x_test, np.full(5, 3.0), np.full(5, -2.0)]
    np.testing.assert_allclose(model.predict(shifted), plain.predict(x_test), rtol=1e-9)


def test_a_column_constant_up_to_rounding_is_ignored():
    (x, y), (x_val, y_val), (x_test, _) = linear_problem(7, 3)
    assert np.full(7, 0.1).std() > 0  # the mean of seven 0.1s is not exactly 0.1
    model = fit_ridge(np.c_[x, np.full(7, 0.1)], y, np.c_[x_val, np.full(8, 0.1)], y_val, alphas=(0.1,), relative=False)
    plain = fit_ridge(x, y, x_val, y_val, alphas=(0.1,), relative=False)
    np.testing.assert_allclose(model.predict(np.c_[x_test, np.full(5, 0.2)]), plain.predict(x_test), rtol=1e-6)


@pytest.fixture
def arrays():
    (x, y), (x_val, y_val), _ = linear_problem(6, 3)
    return x, y, x_val, y_val


@pytest.mark.parametrize(
    ("position", "bad", "message"),
    [
        (0, np.zeros(6), r"x_train: expected a non-empty 2-D array \(samples, features\), got shape \(6,\)"),
        (
            1,
            np.zeros((6, 3, 1)),
            r"y_train: expected a non-empty 2-D array \(samples, features\), got shape \(6, 3, 1\)",
        ),
        (2, np.zeros((0, 3)), r"x_val: expected a non-empty 2-D array \(samples, features\), got shape \(0, 3\)"),
        (3, np.full((8, 3), np.nan), r"y_val: expected finite values, got NaN or inf"),
        (0, np.full((6, 3), np.inf), r"x_train: expected finite values, got NaN or inf"),
    ],
)
def test_non_matrix_and_non_finite_inputs_are_rejected(arrays, position, bad, message):
    args = list(arrays)
    args[position] = bad
    with pytest.raises(ValueError, match=message):
        fit_ridge(*args)


def test_row_and_width_mismatches_are_rejected(arrays):
    x, y, x_val, y_val = arrays
    with pytest.raises(
        ValueError, match=r"ridge: expected as many target rows as input rows, got 6 / 5 \(train\) and 8 / 8 \(val\)"
    ):
        fit_ridge(x, y[:5], x_val, y_val)
    with pytest.raises(ValueError, match=r"got 6 / 6 \(train\) and 8 / 7 \(val\)"):
        fit_ridge(x, y, x_val, y_val[:7])
    with pytest.raises(
        ValueError, match=r"ridge: expected validation arrays with the training widths 3 / 3, got 4 / 3"
    ):
        fit_ridge(x, y, np.c_[x_val, x_val[:, :1]], y_val)
    with pytest.raises(ValueError, match=r"training widths 3 / 3, got 3 / 2"):
        fit_ridge(x, y, x_val, y_val[:, :2])


@pytest.mark.parametrize("alphas", [(), (1.0, 0.0), (-1.0,)])
def test_non_positive_penalties_are_rejected(arrays, alphas):
    with pytest.raises(ValueError, match=re.escape(f"alphas: expected positive penalties, got {alphas!r}.")):
        fit_ridge(*arrays, alphas=alphas)


def test_predict_checks_its_input(arrays):
    model = fit_ridge(*arrays)
    with pytest.raises(ValueError, match=r"x: expected 3 features per row, got 4\."):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x: expected a non-empty 2-D array \(samples, features\), got shape \(3,\)"):
        model.predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"x: expected finite values, got NaN or inf"):
        model.predict(np.full((2, 3), np.nan))
