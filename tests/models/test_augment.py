"""pipelines.models.augment: exact counts, shared positions, copies, interpolation weights, seeding, errors."""

from __future__ import annotations

import pytest
import torch

from pipelines.models.augment import interpolate_trs, sparsify, spatial_mask, temporal_interpolate


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------------
# sparsify


def test_sparsify_zeroes_half_of_the_picked_fraction_in_a_copy():
    fmri = torch.randn(8, 100) + 10.0  # no zeros to start with
    before = fmri.clone()
    out = sparsify(fmri, 0.2, _gen())
    assert int((out == 0).sum()) == 80  # round(0.2 * 800) = 160 picked, half zeroed
    torch.testing.assert_close(fmri, before, rtol=0, atol=0)  # input untouched
    kept = out != 0
    torch.testing.assert_close(out[kept], fmri[kept], rtol=0, atol=0)
    assert int((sparsify(fmri, 0.4, _gen()) == 0).sum()) == 160
    assert int((sparsify(fmri, 0.0, _gen()) == 0).sum()) == 0


def test_sparsify_does_not_accumulate_and_is_seeded():
    fmri = torch.randn(4, 50) + 10.0
    out = fmri
    for _ in range(5):  # the reference's in-place version would reach 1 - 0.9**5 of zeros
        out = sparsify(fmri, 0.2, _gen(1))
    assert int((out == 0).sum()) == 20
    torch.testing.assert_close(sparsify(fmri, 0.2, _gen(3)), sparsify(fmri, 0.2, _gen(3)), rtol=0, atol=0)
    assert not torch.equal(sparsify(fmri, 0.2, _gen(3)) == 0, sparsify(fmri, 0.2, _gen(4)) == 0)


def test_sparsify_chooses_entries_uniformly():
    fmri = torch.ones(4, 25)
    hits = sum((sparsify(fmri, 0.5, _gen(s)) == 0).float() for s in range(400))
    # each entry is zeroed with probability 25/100; 400 draws: mean 100, sd ~8.7
    assert hits.min() > 60 and hits.max() < 140


def test_sparsify_errors():
    with pytest.raises(ValueError, match=r"fraction_picked: expected a number in \[0, 1\], got 1.5"):
        sparsify(torch.zeros(2, 3), 1.5)
    with pytest.raises(ValueError, match=r"fraction_picked: expected a number in \[0, 1\], got -0.1"):
        sparsify(torch.zeros(2, 3), -0.1)
    with pytest.raises(ValueError, match="fmri: expected a floating-point tensor, got dtype torch.int64"):
        sparsify(torch.zeros(2, 3, dtype=torch.long), 0.2)
    with pytest.raises(TypeError, match=r"fmri: expected a torch.Tensor of shape \(batch, n_voxels\), got list"):
        sparsify([1.0, 2.0], 0.2)


# ---------------------------------------------------------------------------------------------------------------------
# spatial masking


def test_spatial_mask_counts_and_same_positions_in_every_tr():
    tokens = torch.randn(6, 4, 10, 3) + 5.0
    before = tokens.clone()
    masked, mask = spatial_mask(tokens, 0.3, _gen())
    assert mask.shape == (6, 10) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [3] * 6  # round(0.3 * 10) per sample
    zero = (masked == 0).all(dim=-1)  # (batch, window, n_tokens)
    for t in range(4):
        assert torch.equal(zero[:, t], mask)  # same positions in every TR of the window
    torch.testing.assert_close(masked[~mask[:, None].expand(-1, 4, -1)], tokens[~mask[:, None].expand(-1, 4, -1)])
    torch.testing.assert_close(tokens, before, rtol=0, atol=0)
    assert len({tuple(m.nonzero().flatten().tolist()) for m in mask}) > 1  # samples draw their own positions


def test_spatial_mask_fill_and_seed():
    tokens = torch.randn(2, 3, 8, 2)
    masked, mask = spatial_mask(tokens, 0.5, _gen(7), fill=-1.0)
    assert bool((masked[mask[:, None].expand(-1, 3, -1)] == -1.0).all())
    again, mask2 = spatial_mask(tokens, 0.5, _gen(7), fill=-1.0)
    assert torch.equal(mask, mask2) and torch.equal(masked, again)
    assert spatial_mask(tokens, 0.0, _gen())[1].sum() == 0


def test_spatial_mask_errors():
    with pytest.raises(
        ValueError,
        match=r"tokens: expected a tensor of shape \(batch, window, n_tokens, token_dim\), got shape \(2, 3, 8\)",
    ):
        spatial_mask(torch.zeros(2, 3, 8), 0.5)
    with pytest.raises(ValueError, match=r"ratio: expected a number in \[0, 1\), got 1.0"):
        spatial_mask(torch.zeros(2, 3, 8, 2), 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# temporal interpolation


def test_interpolation_weights_on_a_hand_made_window():
    # one voxel, window of 5 TRs with values 0, 10, 20, 50, 80; replace TRs 1 and 2 (kept neighbours 0 and 3)
    x = torch.tensor([[0.0, 10.0, 20.0, 50.0, 80.0]])[..., None]
    replaced = torch.tensor([[False, True, True, False, False]])
    out = interpolate_trs(x, replaced)
    # TR 1: (2/3)·0 + (1/3)·50; TR 2: (1/3)·0 + (2/3)·50 — weights inversely proportional to the distances
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 50 / 3, 100 / 3, 50.0, 80.0]))


def test_interpolation_at_the_window_edges_copies_the_nearest_kept_tr():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])[..., None, None].expand(-1, -1, 2, 3)
    replaced = torch.tensor([[True, True, False, False], [False, False, True, True]])
    out = interpolate_trs(x, replaced)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([3.0, 3.0, 3.0, 4.0]))
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor([5.0, 6.0, 6.0, 6.0]))
    assert out.shape == x.shape


def test_temporal_interpolate_counts_copy_and_kept_trs_unchanged():
    fmri = torch.randn(16, 5, 7)
    before = fmri.clone()
    out, replaced = temporal_interpolate(fmri, 0.4, _gen())
    assert replaced.shape == (16, 5) and replaced.sum(dim=1).tolist() == [2] * 16
    torch.testing.assert_close(fmri, before, rtol=0, atol=0)
    keep = ~replaced
    torch.testing.assert_close(out[keep], fmri[keep], rtol=0, atol=0)
    torch.testing.assert_close(out, interpolate_trs(fmri, replaced))
    again, replaced2 = temporal_interpolate(fmri, 0.4, _gen())
    assert torch.equal(replaced, replaced2) and torch.equal(out, again)
    # every TR position gets replaced sometimes
    assert bool(temporal_interpolate(torch.randn(200, 5, 1), 0.2, _gen(1))[1].any(dim=0).all())


def test_temporal_interpolate_errors():
    with pytest.raises(
        ValueError, match=r"ratio: 0.9 replaces 3 of the 3 TRs of the window; expected at least one TR kept"
    ):
        temporal_interpolate(torch.zeros(2, 3, 4), 0.9)
    with pytest.raises(ValueError, match=r"ratio: expected a number in \[0, 1\), got 1"):
        temporal_interpolate(torch.zeros(2, 3, 4), 1)
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, window, n_voxels\)"):
        temporal_interpolate(torch.zeros(2, 3), 0.3)
    with pytest.raises(
        ValueError, match=r"replaced: expected a bool tensor of shape \(1, 3\), got torch.int64 \(1, 3\)"
    ):
        interpolate_trs(torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(
        ValueError, match="replaced: expected at least one kept TR per sample, got a sample with every TR"
    ):
        interpolate_trs(torch.zeros(2, 3, 2), torch.tensor([[True, False, True], [True, True, True]]))
