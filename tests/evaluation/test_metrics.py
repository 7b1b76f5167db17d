"""Metrics checked against hand computations."""

import numpy as np
import pytest

from pipelines.evaluation.metrics import end_point_error


def test_end_point_error_is_the_mean_vector_distance():
    flow = np.zeros((1, 1, 2, 1, 2))  # (n, n_flows, 2, height, width)
    flow[0, 0, :, 0, 0] = [3.0, 4.0]  # a 3-4-5 triangle at one pixel, exact at the other
    assert end_point_error(flow, np.zeros_like(flow), axis=-3) == pytest.approx(2.5)
    target = np.ones_like(flow)
    flow = target.copy()
    flow[0, 0, :, 0, 1] = [1.0 - 6.0, 1.0 + 8.0]  # 6-8-10
    assert end_point_error(flow, target, axis=-3) == pytest.approx(5.0)


def test_end_point_error_shape_error():
    with pytest.raises(ValueError, match=r"flow: expected the target's shape \(2, 2, 4, 5\), got \(2, 2, 4, 4\)"):
        end_point_error(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 5)), axis=-3)
