"""Metrics as pure functions on arrays."""

from __future__ import annotations

import numpy as np


def end_point_error(flow: np.ndarray, target: np.ndarray, axis: int = -1) -> float:
    """Mean end-point error: the L2 distance between flow vectors, averaged over every other axis.

    Parameters
    ----------
    flow, target : arrays of one shape whose ``axis`` holds (dx, dy)
        E.g. (n_pairs, height, width, 2) with ``axis=-1``, or (n, n_flows, 2, height, width) with ``axis=-3``.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if flow.shape != target.shape:
        raise ValueError(f"flow: expected the target's shape {target.shape}, got {flow.shape}.")
    return float(np.linalg.norm(np.asarray(flow, np.float64) - target, axis=axis).mean())
