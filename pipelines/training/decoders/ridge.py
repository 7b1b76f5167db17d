"""Ridge-regression baselines: the obvious linear alternative to every stage-1 decoder.

Each baseline maps the decoder's own inputs (the same voxels, plus the first-frame latent or image where the decoder
is given one) linearly to the decoder's target, is fitted on the training split, has its penalty chosen on the
validation split, and is scored on the test split with the decoder's own metric
(:mod:`pipelines.training.decoders.evaluate`).

The solver works in the dual (kernel) form, since clips are fewer than features: with centred, standardised training
inputs X (n × p) and centred targets Y, K = X Xᵀ = U diag(s) Uᵀ and the ridge solution for penalty α predicts
x ↦ (x − μ) Xᵀ U diag(1 / (s + α)) Uᵀ Y + ȳ. One eigendecomposition serves every α of the grid. This equals
scikit-learn's ``Ridge(alpha=α)`` on the same standardised inputs (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHAS = tuple(10.0**k for k in range(-3, 5))  # multiples of the mean kernel eigenvalue


@dataclass
class RidgeBaseline:
    """A fitted ridge regression (dual form); predict with :meth:`predict`."""

    x_mean: np.ndarray  # (p,) training means of the inputs
    x_scale: np.ndarray  # (p,) training standard deviations (1 where constant)
    x_train: np.ndarray  # (n, p) standardised training inputs
    dual: np.ndarray  # (n, t) dual coefficients
    y_mean: np.ndarray  # (t,) training means of the targets
    alpha: float  # the chosen penalty
    validation_mse: dict[float, float]  # penalty → validation MSE

    def linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted map on raw inputs: weight (t, p) and bias (t,) with ``predict(x) == x @ weight.T + bias``."""
        weight = (self.x_train.T @ self.dual) / self.x_scale[:, None]  # (p, t): standardisation folded in
        return weight.T, self.y_mean - self.x_mean @ weight

    def factors(self) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """:meth:`linear` as ((left (t, n), right (n, p)), bias) with ``weight == left @ right``, n training samples.

        Of rank at most n, and much smaller than the weight when t and p both exceed n (e.g. the flow grid's
        6,144 targets of a 5-TR window's 22,500 voxels over 1,180 clips).
        """
        right = self.x_train / self.x_scale  # (n, p)
        return (self.dual.T, right), self.y_mean - (self.x_mean @ right.T) @ self.dual

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Targets of inputs ``x`` (m, p): array of shape (m, t)."""
        x = _as_matrix(x, "x")
        if x.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x: expected {self.x_train.shape[1]} features per row, got {x.shape[1]}.")
        z = (x - self.x_mean) / self.x_scale
        return (z @ self.x_train.T) @ self.dual + self.y_mean


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"{name}: expected a non-empty 2-D array (samples, features), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf.")
    return x


def fit_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    relative: bool = True,
) -> RidgeBaseline:
    """Fit ridge regressions for every penalty and keep the one with the lowest validation MSE.

    Parameters
    ----------
    x_train, y_train : arrays of shape (n, p) and (n, t)
    x_val, y_val : arrays of shape (m, p) and (m, t)
        Only used to choose α.
    alphas : tuple of float
        Penalties, as multiples of the mean eigenvalue of the training kernel when ``relative`` (so the grid does
        not depend on the number of features), else absolute.

    Raises
    ------
    ValueError
        If shapes disagree or values are not finite.
    """
    x_train, x_val = _as_matrix(x_train, "x_train"), _as_matrix(x_val, "x_val")
    y_train, y_val = _as_matrix(y_train, "y_train"), _as_matrix(y_val, "y_val")
    if len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise ValueError(
            f"ridge: expected as many target rows as input rows, got {len(x_train)} / {len(y_train)} (train) and "
            f"{len(x_val)} / {len(y_val)} (val)."
        )
    if x_val.shape[1] != x_train.shape[1] or y_val.shape[1] != y_train.shape[1]:
        raise ValueError(
            f"ridge: expected validation arrays with the training widths {x_train.shape[1]} / {y_train.shape[1]}, "
            f"got {x_val.shape[1]} / {y_val.shape[1]}."
        )
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas: expected positive penalties, got {alphas!r}.")
    x_mean, x_scale = x_train.mean(axis=0), x_train.std(axis=0)
    # a column constant up to rounding (std within a few ulps of its mean) carries nothing: leave it unscaled
    constant = x_scale <= 64 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(x_mean))
    x_scale = np.where(constant, 1.0, x_scale)
    z = (x_train - x_mean) / x_scale
    y_mean = y_train.mean(axis=0)
    kernel = z @ z.T
    eigenvalues, eigenvectors = np.linalg.eigh(kernel)
    eigenvalues = eigenvalues.clip(min=0)
    projected = eigenvectors.T @ (y_train - y_mean)
    cross = ((x_val - x_mean) / x_scale) @ z.T
    scale = eigenvalues.mean() if relative else 1.0
    best, scores = None, {}
    for alpha in alphas:
        dual = eigenvectors @ (projected / (eigenvalues + alpha * scale)[:, None])
        scores[float(alpha)] = float(np.mean((cross @ dual + y_mean - y_val) ** 2))
        if best is None or scores[float(alpha)] < scores[best[0]]:
            best = (float(alpha), dual)
    return RidgeBaseline(x_mean, x_scale, z, best[1], y_mean, best[0], scores)
