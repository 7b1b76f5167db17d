"""pipelines.models.brainnrds: flow codebook, expected flow, decoder shapes, training steps, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.models.brainnrds import (
    FlowCodebook,
    FlowDecoder,
    FlowDecoderConfig,
    expected_flow,
    flow_classification_loss,
)

TINY = FlowDecoderConfig(
    n_voxels=12,
    window=5,
    fmri_hidden=16,
    fmri_dim=8,
    grid_size=4,
    image_size=8,
    stem_channels=(8, 8),
    position_channels=2,
    hidden_channels=16,
    n_flows=3,
    n_clusters=5,
)
CENTRES = torch.tensor([[-2.0, 0.0], [0.0, -1.0], [0.0, 0.0], [0.5, 3.0], [2.0, 1.0]])


def _codebook() -> FlowCodebook:
    return FlowCodebook(5).set_centres(CENTRES)


# ---------------------------------------------------------------------------------------------------------------------
# codebook


def test_fit_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    true = np.array([[-3.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    vectors = np.concatenate([c + 0.01 * rng.normal(size=(200, 2)) for c in true])
    book = FlowCodebook(3).fit(vectors, seed=0)
    assert book.is_fitted
    np.testing.assert_allclose(book.centres.numpy(), true, atol=0.01)  # sorted by (dx, dy)
    again = FlowCodebook(3).fit(vectors[rng.permutation(len(vectors))], seed=0)
    np.testing.assert_allclose(again.centres.numpy(), book.centres.numpy(), atol=1e-6)
    subsampled = FlowCodebook(3).fit(torch.tensor(vectors), seed=1, max_vectors=60)
    np.testing.assert_allclose(subsampled.centres.numpy(), true, atol=0.02)


def test_assign_is_the_nearest_centre():
    book = _codebook()
    flows = torch.randn(2, 3, 2, 4, 5) * 2
    classes = book.assign(flows)
    assert classes.shape == (2, 3, 4, 5) and classes.dtype == torch.long
    vectors = flows.permute(0, 1, 3, 4, 2).reshape(-1, 2).numpy()
    distance = ((vectors[:, None, :] - CENTRES.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(classes.flatten().numpy(), distance.argmin(1))
    exact = CENTRES.T[None, :, :, None]  # (1, 2, 5, 1): each centre itself
    assert book.assign(exact).flatten().tolist() == [0, 1, 2, 3, 4]


def test_expected_flow_weights_the_centres_by_probability():
    book = _codebook()
    logits = torch.full((1, 3, 5, 2, 2), -50.0)
    for n in range(3):
        logits[0, n, n + 1] = 50.0  # one-hot-ish: class n + 1 everywhere
    flow = expected_flow(logits, book)
    assert flow.shape == (1, 3, 2, 2, 2)
    for n in range(3):
        torch.testing.assert_close(flow[0, n], CENTRES[n + 1][:, None, None].expand(2, 2, 2))
    uniform = expected_flow(torch.zeros(1, 1, 5, 1, 1), CENTRES)
    torch.testing.assert_close(uniform[0, 0, :, 0, 0], CENTRES.mean(0))
    two = torch.zeros(1, 1, 5, 1, 1)
    two[0, 0, :, 0, 0] = torch.tensor([np.log(3.0), 0.0, -np.inf, -np.inf, -np.inf])  # p = 3/4, 1/4
    torch.testing.assert_close(expected_flow(two, book)[0, 0, :, 0, 0], 0.75 * CENTRES[0] + 0.25 * CENTRES[1])


def test_codebook_errors():
    with pytest.raises(ValueError, match="n_clusters: expected a positive integer, got 0"):
        FlowCodebook(0)
    unfitted = FlowCodebook(5)
    with pytest.raises(ValueError, match="expected fitted centres, got an unfitted codebook; call fit"):
        unfitted.assign(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="expected fitted centres, got an unfitted codebook"):
        expected_flow(torch.zeros(1, 1, 5, 2, 2), unfitted)
    with pytest.raises(ValueError, match=r"vectors: expected an array of shape \(n_vectors, 2\), got shape \(10, 3\)"):
        unfitted.fit(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="vectors: expected finite flow values, got NaN or inf"):
        unfitted.fit(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="expected at least n_clusters=5 distinct flow vectors, got 2"):
        unfitted.fit(np.array([[0.0, 0.0], [1.0, 1.0]] * 10))
    with pytest.raises(ValueError, match=r"centres: expected shape \(5, 2\), got \(4, 2\)"):
        unfitted.set_centres(np.zeros((4, 2)))
    with pytest.raises(
        ValueError, match=r"flows: expected a tensor of shape \(..., 2, height, width\), got \(1, 3, 4, 4\)"
    ):
        _codebook().assign(torch.zeros(1, 3, 4, 4))
    with pytest.raises(
        ValueError,
        match=r"logits: expected a tensor of shape \(batch, n_flows, 5, height, width\), got shape \(1, 3, 4, 2, 2\)",
    ):
        expected_flow(torch.zeros(1, 3, 4, 2, 2), _codebook())
    with pytest.raises(ValueError, match=r"codebook: expected a tensor of shape \(n_clusters, 2\), got shape \(5, 3\)"):
        expected_flow(torch.zeros(1, 3, 5, 2, 2), torch.zeros(5, 3))
    with pytest.raises(
        ValueError, match=r"logits: expected a tensor of shape \(batch, n_flows, n_clusters, height, width\), got shape"
    ):
        flow_classification_loss(torch.zeros(3, 5, 2, 2), torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"targets: expected shape \(1, 3, 2, 2\) \(the logits' grid\), got \(1, 3, 4, 4\); resample"
    ):
        flow_classification_loss(torch.zeros(1, 3, 5, 2, 2), torch.zeros(1, 3, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------------------
# decoder


def test_decoder_shapes_and_configurable_grid():
    model = FlowDecoder(TINY)
    fmri, frame = torch.randn(2, 5, 12), torch.rand(2, 3, 8, 8)
    logits = model(fmri, frame)
    assert logits.shape == (2, 3, 5, 4, 4)
    model.codebook.set_centres(CENTRES)
    assert model.expected_flow(logits).shape == (2, 3, 2, 4, 4)
    wide = FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "grid_size": 8, "position_channels": 0}))
    assert wide(fmri, frame).shape == (2, 3, 5, 8, 8)


def test_decoder_trains_to_classify_flow():
    torch.manual_seed(0)
    model = FlowDecoder(TINY)
    model.codebook.set_centres(CENTRES)
    fmri, frame = torch.randn(8, 5, 12), torch.rand(8, 3, 8, 8)
    # the class depends on the sample (through its fMRI), the flow field and the image half (through position)
    b, n, x = torch.meshgrid(torch.arange(8), torch.arange(3), torch.arange(4), indexing="ij")
    targets = ((b + n + (x >= 2)) % 5)[:, :, None, :].expand(8, 3, 4, 4)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = flow_classification_loss(model(fmri, frame), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_decoder_round_trip_keeps_the_codebook(tmp_path):
    torch.manual_seed(0)
    model = FlowDecoder(TINY).eval()
    model.codebook.set_centres(CENTRES)
    model.save_pretrained(tmp_path / "flow", meta={"steps": 1})
    back = FlowDecoder.from_pretrained(tmp_path / "flow")
    assert back.config == model.config and back.codebook.is_fitted
    torch.testing.assert_close(back.codebook.centres, CENTRES, rtol=0, atol=0)
    fmri, frame = torch.randn(2, 5, 12), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(back(fmri, frame), model(fmri, frame), rtol=0, atol=0)
    torch.testing.assert_close(back.expected_flow(back(fmri, frame)), model.expected_flow(model(fmri, frame)))
    assert not FlowDecoder(TINY).codebook.is_fitted


def test_linear_flow_starts_at_the_given_map_and_joins_the_trunk(tmp_path):
    torch.manual_seed(0)
    model = FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "readout_rank": 4})).eval()
    rng = np.random.default_rng(0)
    n_out = 3 * 2 * 4 * 4
    weight = rng.standard_normal((n_out, 4)) @ rng.standard_normal((4, 60))  # rank 4: exactly representable
    bias = rng.standard_normal(n_out)
    model.set_readout(weight, bias)
    fmri, frame = torch.randn(2, 5, 12), torch.rand(2, 3, 8, 8)
    expected = (fmri.flatten(1).double().numpy() @ weight.T + bias).reshape(2, 3, 2, 4, 4)
    np.testing.assert_allclose(model.linear_flow(fmri).detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert model.trunk[0].in_channels == TINY.fmri_dim + TINY.stem_channels[-1] + TINY.position_channels + 3 * 2
    before = model(fmri, frame)
    model.set_readout(2 * weight, bias)  # the trunk reads the linear flow: the logits follow it
    assert not torch.allclose(model(fmri, frame), before)
    names = {n for n, p in model.named_parameters() if any(p is q for q in model.readout_parameters())}
    assert names == {"readout_in.weight", "readout_out.weight", "readout_out.bias"}
    assert FlowDecoder(TINY).readout_parameters() == []
    model.codebook.set_centres(CENTRES)
    model.save_pretrained(tmp_path / "flow")
    back = FlowDecoder.from_pretrained(tmp_path / "flow")
    torch.testing.assert_close(back.linear_flow(fmri), model.linear_flow(fmri), rtol=0, atol=0)
    torch.testing.assert_close(back(fmri, frame), model(fmri, frame), rtol=0, atol=0)


def test_linear_flow_errors():
    with pytest.raises(ValueError, match="FlowDecoderConfig.readout_rank: expected an integer >= 0, got -1"):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "readout_rank": -1}))
    with pytest.raises(ValueError, match="FlowDecoderConfig.readout_rank: expected an integer >= 0, got True"):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "readout_rank": True}))
    with pytest.raises(ValueError, match="linear_flow: expected a decoder built with readout_rank > 0"):
        FlowDecoder(TINY).linear_flow(torch.zeros(1, 5, 12))
    with pytest.raises(ValueError, match="set_readout: expected a decoder built with readout_rank > 0"):
        FlowDecoder(TINY).set_readout(np.zeros((96, 60)), np.zeros(96))
    model = FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "readout_rank": 4}))
    with pytest.raises(ValueError, match=r"set_readout: expected weight of shape \(96, 60\), got \(96, 12\)"):
        model.set_readout(np.zeros((96, 12)), np.zeros(96))
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, 5, 12\), got shape \(1, 12\)"):
        model.linear_flow(torch.zeros(1, 12))


def test_decoder_errors():
    with pytest.raises(ValueError, match="FlowDecoderConfig.window: expected a positive integer, got 0"):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "window": 0}))
    with pytest.raises(
        ValueError,
        match=r"expected position_channels >= 0, n_blocks >= 0 and at least one positive stem width, got position_channels=2, n_blocks=3, stem_channels=\(\)",
    ):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "stem_channels": ()}))
    with pytest.raises(ValueError, match="hidden_channels: expected a multiple of 8 .*, got 12"):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "hidden_channels": 12}))
    with pytest.raises(ValueError, match=r"FlowDecoderConfig.dropout: expected a probability in \[0, 1\), got 1.0"):
        FlowDecoder(FlowDecoderConfig(**{**TINY.__dict__, "dropout": 1.0}))
    model = FlowDecoder(TINY)
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, 5, 12\), got shape \(2, 4, 12\)"):
        model(torch.zeros(2, 4, 12), torch.zeros(2, 3, 8, 8))
    with pytest.raises(
        ValueError, match=r"first_frame: expected a tensor of shape \(2, 3, 8, 8\), got shape \(2, 3, 16, 16\)"
    ):
        model(torch.zeros(2, 5, 12), torch.zeros(2, 3, 16, 16))
    with pytest.raises(TypeError, match="first_frame: expected a torch.Tensor"):
        model(torch.zeros(2, 5, 12), np.zeros((2, 3, 8, 8)))
