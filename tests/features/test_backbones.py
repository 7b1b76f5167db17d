"""pipelines.features.backbones: the shared wrappers, RAFT's resize-and-rescale rule, the tier dispatch."""

import numpy as np
import pytest
import torch

from pipelines.features.backbones import (
    RAFT_MIN_SIZE,
    FlowEstimator,
    check_frames,
    load_backbone,
    rescale_flow,
    to_frames,
    to_tensor,
)


class ConstantFlow(torch.nn.Module):
    """Stands in for RAFT: returns a constant flow (2, -1) at whatever size it is given, and records that size."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = None

    def forward(self, a, b, num_flow_updates):
        self.seen = tuple(a.shape[-2:])
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0], flow[:, 1] = 2.0, -1.0
        return [flow]


def test_small_inputs_are_resized_up_and_the_flow_rescaled():
    model = ConstantFlow()
    estimator = FlowEstimator(model, num_flow_updates=1, name="constant")
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    flow = estimator(frames, frames)
    assert model.seen == (RAFT_MIN_SIZE, RAFT_MIN_SIZE)
    assert flow.shape == (3, 32, 64, 2)
    # 2 px at 128 wide is 1 px at 64 wide; -1 px at 128 high is -0.25 px at 32 high
    np.testing.assert_allclose(flow[..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(flow[..., 1], -0.25, atol=1e-6)
    big = np.zeros((1, 136, 200, 3), np.uint8)
    assert estimator(big, big).shape == (1, 136, 200, 2) and model.seen == (136, 200)
    with pytest.raises(ValueError, match=r"second: expected the shape of first \(3, 32, 64, 3\)"):
        estimator(frames, frames[:2])


def test_rescale_flow_analytic():
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 4.0
    flow[:, 1, :, :4] = 2.0  # left half moves down
    out = rescale_flow(flow, 4, 2)
    assert out.shape == (1, 2, 4, 2)
    np.testing.assert_allclose(out[0, 0].numpy(), 1.0, atol=1e-6)  # 4 px of 8 is 1 px of 2
    np.testing.assert_allclose(out[0, 1, :, 0].numpy(), 1.0, atol=1e-6)  # 2 px of 8 is 1 px of 4, left column
    np.testing.assert_allclose(out[0, 1, :, 1].numpy(), 0.0, atol=1e-6)
    assert rescale_flow(flow, 8, 8) is flow


def test_frame_conversions():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = to_tensor(frames)
    assert x.shape == (2, 3, 5, 7) and float(x.max()) <= 1.0
    np.testing.assert_array_equal(to_frames(x), frames)
    with pytest.raises(
        ValueError, match=r"frames: expected a uint8 array of shape \(n_frames, height, width, 3\), got float64"
    ):
        check_frames(np.zeros((1, 4, 4, 3)))


def test_dispatch_errors():
    with pytest.raises(ValueError, match=r"role: expected one of \['clip', 'vae', 'unet', 'raft'"):
        load_backbone("depth")
    with pytest.raises(ValueError, match=r"tier: expected one of \['full', 'demo'\], got 'huge'"):
        load_backbone("clip", "huge")
    with pytest.raises(ValueError, match="backbones_dir: the demo tier reads trained models from a folder; got None"):
        load_backbone("clip", "demo")


def test_image_text_encoder_centre_crops_after_resizing_when_asked():
    """Resize to 16 (the frames' size) then an 8-px centre crop: a 4-px border never reaches the model."""
    from pipelines.features.backbones import ImageTextEncoder

    class MeanPixel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = None
            self.scale = torch.nn.Parameter(torch.ones(()))

        def encode_image(self, x):
            self.seen = tuple(x.shape)
            return x.mean(dim=(2, 3)) * self.scale + 1.0

    frames = np.full((1, 16, 16, 3), 100, np.uint8)
    bordered = frames.copy()
    for edge in (np.s_[:, :4], np.s_[:, -4:], np.s_[:, :, :4], np.s_[:, :, -4:]):
        bordered[edge] = (255, 0, 0)  # a red border: the (L2-normalised) embedding's direction would change
    model = MeanPixel()
    encoder = ImageTextEncoder(model, None, image_size=8, mean=(0, 0, 0), std=(1, 1, 1), name="t", resize_size=16)
    np.testing.assert_allclose(encoder.encode_image(bordered), encoder.encode_image(frames), atol=1e-6)
    assert model.seen == (1, 3, 8, 8)
    plain = ImageTextEncoder(model, None, image_size=8, mean=(0, 0, 0), std=(1, 1, 1), name="t")
    assert not np.allclose(plain.encode_image(bordered), plain.encode_image(frames))
