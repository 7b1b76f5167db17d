"""brainviz.flow: Middlebury colours against the reference directions, shared normalisation, EPE by hand."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torchvision.utils import flow_to_image

from brainviz.flow import (
    FlowPanels,
    colour_wheel,
    epe_map,
    flow_figure,
    flow_panels,
    flow_to_rgb,
    per_frame_epe,
    shared_max_radius,
)
from pipelines.evaluation.metrics import end_point_error


def constant_flow(u: float, v: float, n_frames: int = 1, height: int = 3, width: int = 4) -> np.ndarray:
    """Flow of shape (n_frames, 2, height, width) with the same vector (u, v) everywhere."""
    flow = np.empty((n_frames, 2, height, width))
    flow[:, 0], flow[:, 1] = u, v
    return flow


def random_pair(seed: int = 0, shape=(4, 2, 6, 5)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.normal(scale=3.0, size=shape)
    return target + rng.normal(size=shape), target


# Directions from shared/reference/surfaces_and_app.md §7 (image coordinates, +v = down).
@pytest.mark.parametrize(
    ("u", "v", "check"),
    [
        (1.0, 0.0, lambda r, g, b: r > 200 and g < 60 and b < 60),  # right = red
        (0.0, 1.0, lambda r, g, b: r > 200 and g > 180 and b < 60),  # down = yellow
        (-1.0, 0.0, lambda r, g, b: b > 150 and r < 60),  # left = cyan / blue
        (0.0, -1.0, lambda r, g, b: b > 200 and 50 < r < b and g < 60),  # up = violet
    ],
    ids=["right-red", "down-yellow", "left-cyan-blue", "up-violet"],
)
def test_direction_colours(u, v, check):
    rgb = flow_to_rgb(constant_flow(u, v), max_radius=1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 4, 3)
    assert check(*(int(c) for c in rgb[0, 0, 0])), rgb[0, 0, 0]


def test_zero_flow_is_white_and_single_frame_layout():
    assert (flow_to_rgb(np.zeros((2, 5, 6))) == 255).all()
    assert flow_to_rgb(np.zeros((2, 5, 6))).shape == (5, 6, 3)


def test_half_radius_is_half_saturated():
    # Baker wheel: colour = 1 - |f| (1 - wheel colour); right's wheel colour is (255, 0, 0).
    rgb = flow_to_rgb(constant_flow(2.0, 0.0), max_radius=4.0)
    assert tuple(rgb[0, 0, 0]) == (255, 127, 127)


def test_shared_radius_holds_across_batches():
    vector = constant_flow(1.5, -0.5, height=1, width=1)
    alone = flow_to_rgb(vector, max_radius=4.0)
    busy = np.concatenate([vector, constant_flow(-4.0, 0.0, height=1, width=1)], axis=0)
    with_others = flow_to_rgb(busy, max_radius=4.0)[:1]
    assert np.array_equal(alone, with_others)
    # Independent reference: torchvision normalising a batch whose own largest norm is exactly 4.
    reference = flow_to_image(torch.tensor(busy, dtype=torch.float32))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(alone[0], reference)


def test_magnitude_beyond_radius_is_clipped_not_rescaling_others():
    flow = np.concatenate([constant_flow(10.0, 0.0, height=1, width=1), constant_flow(1.0, 0.0, height=1, width=1)])
    rgb = flow_to_rgb(flow, max_radius=2.0)
    assert tuple(rgb[0, 0, 0]) == (255, 0, 0)  # saturated, same hue
    assert tuple(rgb[1, 0, 0]) == (255, 127, 127)  # still half of the radius 2


def test_nan_pixels_render_grey_and_default_radius_ignores_them():
    flow = constant_flow(2.0, 0.0)
    flow[0, :, 0, 0] = np.nan
    rgb = flow_to_rgb(flow)
    assert tuple(rgb[0, 0, 0]) == (128, 128, 128)
    assert tuple(rgb[0, 1, 1]) == (255, 0, 0)


def test_shared_max_radius():
    a, b = constant_flow(3.0, 4.0), constant_flow(0.0, 1.0)
    b[0, :, 0, 0] = np.nan
    assert shared_max_radius(a, b) == pytest.approx(5.0)
    assert shared_max_radius(b) == pytest.approx(1.0)
    assert shared_max_radius(np.zeros((1, 2, 2, 2))) == 1.0
    assert shared_max_radius(np.full((2, 2, 2), np.nan)) == 1.0


def test_epe_map_analytic():
    predicted, target = constant_flow(4.0, 6.0, n_frames=2), constant_flow(1.0, 2.0, n_frames=2)  # differ by (3, 4)
    errors = epe_map(predicted, target)
    assert errors.shape == (2, 3, 4)
    np.testing.assert_allclose(errors, 5.0)
    np.testing.assert_allclose(per_frame_epe(predicted, target), [5.0, 5.0])


def test_per_frame_epe_equals_end_point_error():
    predicted, target = random_pair()
    expected = [end_point_error(p, t, axis=0) for p, t in zip(predicted, target, strict=True)]
    np.testing.assert_allclose(per_frame_epe(predicted, target), expected, rtol=1e-12)
    np.testing.assert_allclose(epe_map(predicted, target).mean(axis=(1, 2)), expected, rtol=1e-12)


def test_per_frame_epe_leaves_out_nan_pixels():
    predicted, target = constant_flow(3.0, 4.0, n_frames=2), constant_flow(0.0, 0.0, n_frames=2)
    predicted[0, :, 0, 0] = [100.0, 100.0]
    target[0, :, 0, 0] = np.nan  # the only wrong pixel is invalid
    target[1] = np.nan
    epe = per_frame_epe(predicted, target)
    assert epe[0] == pytest.approx(5.0) and np.isnan(epe[1])
    assert np.isnan(epe_map(predicted, target)[0, 0, 0])


def test_flow_panels_share_one_radius():
    predicted, target = constant_flow(1.0, 0.0), constant_flow(2.0, 0.0)
    panels = flow_panels(predicted, target)
    assert isinstance(panels, FlowPanels)
    assert panels.max_radius == pytest.approx(2.0)
    assert tuple(panels.predicted_rgb[0, 0, 0]) == (255, 127, 127)  # half of the target's radius
    assert tuple(panels.target_rgb[0, 0, 0]) == (255, 0, 0)
    assert panels.mean_epe == pytest.approx(1.0)
    np.testing.assert_allclose(panels.per_frame_epe, [1.0])
    assert panels.titles == ("decoded", "RAFT")


def test_colour_wheel_is_a_disc():
    wheel = colour_wheel(21)
    assert wheel.shape == (21, 21, 4) and wheel.dtype == np.uint8
    assert wheel[0, 0, 3] == 0 and wheel[10, 10, 3] == 255
    assert tuple(wheel[10, 10, :3]) == (255, 255, 255)  # centre = zero flow


@pytest.mark.parametrize("n_frames", [1, 3])
def test_flow_figure_saves_png(tmp_path, n_frames):
    predicted, target = random_pair(shape=(n_frames, 2, 8, 12))
    target[0, :, :2, :2] = np.nan
    fig = flow_figure(predicted, target, titles=("motion decoder", "RAFT"))
    assert isinstance(fig, Figure)
    path = tmp_path / "flow.png"
    fig.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors():
    good = np.zeros((2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"predicted: expected the target's shape \(2, 2, 4, 4\), got \(2, 2, 4, 5\)"):
        epe_map(np.zeros((2, 2, 4, 5)), good)
    with pytest.raises(
        ValueError, match=r"target: expected 2 flow components \(u, v\) on axis 1, got shape \(2, 3, 4, 4\)"
    ):
        per_frame_epe(good, np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"predicted: expected an array of shape \(n_frames, 2, height, width\), got"):
        flow_panels(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(
        ValueError, match=r"flows: expected an array of shape .* or \(2, height, width\), got shape \(4,\)"
    ):
        flow_to_rgb(np.zeros(4))
    with pytest.raises(ValueError, match="flows: expected finite flow values .* got 1 infinite"):
        flow_to_rgb(np.where(np.arange(good.size).reshape(good.shape) == 3, np.inf, good))
    with pytest.raises(ValueError, match="max_radius: expected a positive finite number of pixels, got 0"):
        flow_to_rgb(good, max_radius=0)
    with pytest.raises(ValueError, match="max_radius: expected a positive finite number of pixels, got nan"):
        flow_to_rgb(good, max_radius=float("nan"))
    with pytest.raises(TypeError, match="flows: expected real numbers .* got dtype complex128"):
        flow_to_rgb(good.astype(complex))
    with pytest.raises(ValueError, match="shared_max_radius: expected at least one flow array, got none"):
        shared_max_radius()
    with pytest.raises(ValueError, match=r"titles: expected two names \(decoded, target\), got \('a',\)"):
        flow_figure(good, good, titles=("a",))
