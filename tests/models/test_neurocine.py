"""pipelines.models.neurocine: patching, the encoder and its attention, losses, voxel maps, training, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.models.augment import spatial_mask, temporal_interpolate
from pipelines.models.mind_animator import symmetric_info_nce
from pipelines.models.neurocine import (
    FMRIEncoder,
    FMRIEncoderConfig,
    attention_to_voxels,
    embedding_loss,
    n_patches,
    neurocine_loss,
    patchify,
    spatial_loss,
    temporal_loss,
    unpatchify,
)

TINY = FMRIEncoderConfig(
    n_voxels=30,
    window=3,
    patch_size=4,
    d_model=16,
    depth=2,
    n_heads=2,
    mlp_dim=32,
    embed_dim=8,
    n_cond_tokens=3,
    cond_dim=6,
)
N_TOKENS = 8  # ceil(30 / 4)


def _no_dropout() -> FMRIEncoderConfig:
    return FMRIEncoderConfig(**{**TINY.__dict__, "dropout": 0.0})


# ---------------------------------------------------------------------------------------------------------------------
# patching


def test_patchify_pads_the_end_and_unpatchify_inverts_it():
    x = torch.arange(5.0).view(1, 1, 5)
    patches = patchify(x, 2)
    assert n_patches(5, 2) == 3 and patches.shape == (1, 1, 3, 2)
    assert patches.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0]
    torch.testing.assert_close(unpatchify(patches, 5), x, rtol=0, atol=0)
    assert patchify(torch.zeros(2, 3, 8), 4).shape == (2, 3, 2, 4)  # no padding needed
    with pytest.raises(ValueError, match="patch_size: expected a positive integer, got 0"):
        patchify(x, 0)
    with pytest.raises(ValueError, match="tokens: expected 3 tokens of 2 for 5 voxels, got 4"):
        unpatchify(torch.zeros(1, 4, 2), 5)


# ---------------------------------------------------------------------------------------------------------------------
# encoder


def test_encoder_shapes_and_patchified_input():
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    fmri = torch.randn(2, 3, 30)
    out = model(fmri)
    assert model.n_tokens == N_TOKENS
    assert out.tokens.shape == (2, N_TOKENS, 16)
    assert out.embedding.shape == (2, 8)
    assert out.conditioning.shape == (2, 3, 6)
    assert out.reconstruction.shape == (2, 3, N_TOKENS, 4)
    assert out.attention is None
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    same = model(model.patchify(fmri))
    for a, b in zip(out[:4], same[:4], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mixer_pool_weighs_each_token_position_on_its_own():
    torch.manual_seed(0)
    model = FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "pool": "mixer", "n_pool": 3})).eval()
    out = model(torch.randn(2, 3, 30))
    mix, head = model.pool_mixer, model.embed_head
    # independent reference: pooled[b, d, p] = sum_n tokens[b, n, d] W[p, n] + c[p], flattened d-major, then the head
    pooled = torch.einsum("bnd,pn->bdp", out.tokens, mix.weight) + mix.bias
    expected = pooled.reshape(2, -1) @ head.weight.T + head.bias
    torch.testing.assert_close(out.embedding, expected, rtol=1e-5, atol=1e-6)
    assert head.in_features == 16 * 3
    # unlike the mean, the mixer tells token positions apart: swapping two tokens' states changes the embedding
    swapped = out.tokens[:, [1, 0, *range(2, N_TOKENS)]]
    again = torch.einsum("bnd,pn->bdp", swapped, mix.weight) + mix.bias
    assert not torch.allclose(again.reshape(2, -1) @ head.weight.T + head.bias, expected)


def test_readout_starts_at_the_given_map_and_sees_masked_positions_as_zero():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "readout_rank": 8})).eval()
    weight, bias = torch.randn(8, 90, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen)
    model.set_readout(weight, bias.numpy())
    x = torch.randn(2, 3, 30, generator=gen)
    # embed_dim 8 = rank 8: the map is exact, and the transformer's embedding head starts at zero
    expected = x.reshape(2, 90).double() @ weight.T + bias.double()
    torch.testing.assert_close(model(x).embedding.double(), expected, rtol=1e-5, atol=1e-5)
    # a masked token position reads as zero voxels (patch 1 = voxels 4..7 of every TR)
    mask = torch.zeros(2, N_TOKENS, dtype=torch.bool)
    mask[:, 1] = True
    zeroed = x.clone()
    zeroed[..., 4:8] = 0
    expected = zeroed.reshape(2, 90).double() @ weight.T + bias.double()
    torch.testing.assert_close(model(x, token_mask=mask).embedding.double(), expected, rtol=1e-5, atol=1e-5)
    # a lower rank gives the best approximation of that rank (Eckart-Young): the SVD cut to 3 components
    low = FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "readout_rank": 3})).eval()
    low.set_readout(weight.numpy(), bias.numpy())
    u, s, vt = torch.linalg.svd(weight, full_matrices=False)
    cut = (u[:, :3] * s[:3]) @ vt[:3]
    torch.testing.assert_close(
        low(x).embedding.double(), x.reshape(2, 90).double() @ cut.T + bias.double(), rtol=1e-5, atol=1e-5
    )


def test_readout_errors():
    with pytest.raises(ValueError, match="FMRIEncoderConfig.readout_rank: expected an integer >= 0, got -1"):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "readout_rank": -1}))
    with pytest.raises(ValueError, match="set_readout: expected an encoder built with readout_rank > 0"):
        FMRIEncoder(TINY).set_readout(torch.zeros(8, 90), torch.zeros(8))
    model = FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "readout_rank": 4}))
    with pytest.raises(ValueError, match=r"set_readout: expected weight of shape \(8, 90\), got \(8, 30\)"):
        model.set_readout(torch.zeros(8, 30), torch.zeros(8))
    with pytest.raises(ValueError, match=r"set_readout: expected bias of shape \(8,\), got \(7,\)"):
        model.set_readout(torch.zeros(8, 90), torch.zeros(7))
    assert [p.shape for p in model.readout_parameters()] == [(4, 90), (8, 4), (8,)]
    assert FMRIEncoder(TINY).readout_parameters() == []


def test_reconstruction_head_is_aligned_with_the_patches():
    """A linear model that copies its input through the recon head's layout gives back the patches."""
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    # make token state = patch values (window·patch_size = 12 <= d_model 16), then read them back
    model.blocks = torch.nn.ModuleList()
    with torch.no_grad():
        model.patch_embed.weight.zero_()
        model.patch_embed.bias.zero_()
        model.patch_embed.weight[:12, :12] = torch.eye(12)
        model.positions.zero_()
        model.norm = torch.nn.Identity()
        model.recon_head.weight.zero_()
        model.recon_head.bias.zero_()
        model.recon_head.weight[:12, :12] = torch.eye(12)
    patches = model.patchify(torch.randn(2, 3, 30))
    torch.testing.assert_close(model(patches).reconstruction, patches)


def test_masked_tokens_ignore_their_content():
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    patches = model.patchify(torch.randn(2, 3, 30))
    mask = torch.zeros(2, N_TOKENS, dtype=torch.bool)
    mask[0, [1, 5]] = True
    mask[1, 2] = True
    changed = patches.clone()
    changed[mask[:, None].expand(-1, 3, -1)] += 5.0
    a, b = model(patches, token_mask=mask), model(changed, token_mask=mask)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    assert not torch.allclose(model(patches).tokens, model(changed).tokens)


def test_attention_weights_are_returned_per_layer():
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    fmri = torch.randn(2, 3, 30)
    out = model(fmri, return_attention=True)
    assert len(out.attention) == TINY.depth
    for weights in out.attention:
        assert weights.shape == (2, 2, N_TOKENS, N_TOKENS)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, N_TOKENS))
    plain = model(fmri)
    torch.testing.assert_close(out.tokens, plain.tokens, rtol=1e-5, atol=1e-5)  # manual path = SDPA path


def test_encoder_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    model.save_pretrained(tmp_path / "enc")
    back = FMRIEncoder.from_pretrained(tmp_path / "enc")
    assert back.config == model.config
    fmri = torch.randn(2, 3, 30)
    for a, b in zip(back(fmri, return_attention=True), model(fmri, return_attention=True), strict=True):
        if isinstance(a, list):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, rtol=0, atol=0)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_encoder_errors():
    with pytest.raises(ValueError, match="FMRIEncoderConfig.d_model: expected an even multiple of n_heads=3, got 16"):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "n_heads": 3}))
    with pytest.raises(ValueError, match="FMRIEncoderConfig.patch_size: expected a positive integer, got 0"):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "patch_size": 0}))
    with pytest.raises(
        ValueError, match=r"FMRIEncoderConfig.attn_dropout: expected a probability in \[0, 1\), got 1.5"
    ):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "attn_dropout": 1.5}))
    with pytest.raises(ValueError, match=r"FMRIEncoderConfig.pool: expected one of \['mean', 'mixer'\], got 'max'"):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "pool": "max"}))
    with pytest.raises(ValueError, match="FMRIEncoderConfig.n_pool: expected a positive integer, got 0"):
        FMRIEncoder(FMRIEncoderConfig(**{**TINY.__dict__, "pool": "mixer", "n_pool": 0}))
    model = FMRIEncoder(TINY)
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, 3, 30\), got shape \(2, 2, 30\)"):
        model(torch.zeros(2, 2, 30))
    with pytest.raises(
        ValueError, match=r"fmri: expected a tensor of shape \(batch, 3, 8, 4\), got shape \(2, 3, 8, 5\)"
    ):
        model(torch.zeros(2, 3, 8, 5))
    with pytest.raises(ValueError, match=r"token_mask: expected a tensor of shape \(2, 8\), got shape \(2, 7\)"):
        model(torch.zeros(2, 3, 30), token_mask=torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="token_mask: expected a bool tensor"):
        model(torch.zeros(2, 3, 30), token_mask=torch.zeros(2, 8))


# ---------------------------------------------------------------------------------------------------------------------
# losses


def test_spatial_and_temporal_losses_average_the_flagged_entries_only():
    target = torch.zeros(1, 2, 3, 2)
    recon = torch.zeros(1, 2, 3, 2)
    recon[0, :, 1] = 2.0  # token 1 wrong by 2 in both TRs
    recon[0, 1, 2] = 1.0  # TR 1 of token 2 wrong by 1
    token_mask = torch.tensor([[False, True, False]])
    assert float(spatial_loss(recon, target, token_mask)) == pytest.approx(4.0)
    # TR 1 over all tokens: entries (token 0: 0, token 1: 4, token 2: 1) x 2 dims -> (0 + 8 + 2) / 6
    replaced = torch.tensor([[False, True]])
    assert float(temporal_loss(recon, target, replaced)) == pytest.approx(10 / 6)
    assert float(spatial_loss(recon, target, torch.zeros(1, 3, dtype=torch.bool))) == 0.0
    assert float(temporal_loss(recon, target, torch.zeros(1, 2, dtype=torch.bool))) == 0.0


def test_embedding_and_total_loss():
    torch.manual_seed(0)
    emb, text, image = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(1.5)
    expected = 0.25 * symmetric_info_nce(emb, text, scale) + 0.75 * symmetric_info_nce(emb, image, scale)
    torch.testing.assert_close(embedding_loss(emb, text, image, scale, alpha=0.25), expected)
    model = FMRIEncoder(TINY).eval()
    patches = model.patchify(torch.randn(4, 3, 30))
    mask, replaced = torch.rand(4, N_TOKENS) < 0.5, torch.tensor([[True, False, False]] * 4)
    out = model(patches, token_mask=mask)
    cond = torch.randn(4, 3, 6)
    loss = neurocine_loss(out, patches, mask, replaced, text, image, cond, scale, alpha=0.25, weights=(1, 2, 3, 4))
    parts = (
        spatial_loss(out.reconstruction, patches, mask),
        temporal_loss(out.reconstruction, patches, replaced),
        embedding_loss(out.embedding, text, image, scale, 0.25),
        ((out.conditioning - cond) ** 2).mean(),
    )
    for got, want in zip(loss[1:], parts, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(loss.total, parts[0] + 2 * parts[1] + 3 * parts[2] + 4 * parts[3])


def test_loss_errors():
    x = torch.zeros(1, 2, 3, 2)
    with pytest.raises(ValueError, match=r"token_mask: expected a tensor of shape \(1, 3\), got shape \(1, 2\)"):
        spatial_loss(x, x, torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"replaced: expected a tensor of shape \(1, 2\), got shape \(1, 3\)"):
        temporal_loss(x, x, torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"target: expected a tensor of shape \(1, 2, 3, 2\) like reconstruction"):
        spatial_loss(x, torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=r"reconstruction: expected a tensor of shape \(batch, window, n_tokens, patch_size\)"
    ):
        temporal_loss(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"alpha: expected a weight in \[0, 1\], got -0.5"):
        embedding_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor(1.0), alpha=-0.5)
    model = FMRIEncoder(TINY).eval()
    out = model(torch.zeros(2, 3, 30))
    args = (
        torch.zeros(2, 8, dtype=torch.bool),
        torch.zeros(2, 3, dtype=torch.bool),
        torch.zeros(2, 8),
        torch.zeros(2, 8),
    )
    with pytest.raises(ValueError, match=r"weights: expected 4 numbers \(w_spa, w_tem, w_emb, w_cond\), got 3"):
        neurocine_loss(out, out.reconstruction, *args, torch.zeros(2, 3, 6), torch.tensor(1.0), weights=(1, 1, 1))
    with pytest.raises(ValueError, match=r"cond_true: expected a tensor of shape \(2, 3, 6\), got shape \(2, 4, 6\)"):
        neurocine_loss(out, out.reconstruction, *args, torch.zeros(2, 4, 6), torch.tensor(1.0))


# ---------------------------------------------------------------------------------------------------------------------
# attention on voxels


def test_attention_to_voxels_on_a_hand_made_example():
    # 5 voxels in patches of 2 -> 3 tokens; 2 heads
    head0 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    head1 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    attention = torch.stack([head0, head1])[None]
    # received by key k: mean over heads and queries: token 0: (2/3 + 0)/2, token 1: (0 + 1)/2, token 2: (1/3)/2
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 2, 1 / 2, 1 / 6]])
    torch.testing.assert_close(attention_to_voxels(attention, 5, 2), expected)
    uniform = torch.full((1, 2, 3, 3), 1 / 3)
    layers = attention_to_voxels([attention, uniform], 5, 2)  # a list is averaged over layers
    torch.testing.assert_close(layers, (expected + 1 / 3) / 2)


def test_attention_to_voxels_from_the_encoder_sums_to_one_over_tokens():
    torch.manual_seed(0)
    model = FMRIEncoder(TINY).eval()
    out = model(torch.randn(2, 3, 32)[:, :, :30], return_attention=True)
    voxels = attention_to_voxels(out.attention, 30, 4)
    assert voxels.shape == (2, 30)
    torch.testing.assert_close(voxels[:, ::4].sum(dim=1), torch.ones(2))  # one voxel per token


def test_attention_to_voxels_errors():
    with pytest.raises(ValueError, match="attention: expected at least one layer's weights, got an empty list"):
        attention_to_voxels([], 5, 2)
    with pytest.raises(
        ValueError,
        match=r"attention: expected a tensor of shape \(batch, n_heads, 3, 3\) for 5 voxels in patches of 2, got shape \(1, 2, 4, 4\)",
    ):
        attention_to_voxels(torch.zeros(1, 2, 4, 4), 5, 2)


# ---------------------------------------------------------------------------------------------------------------------
# training


def test_encoder_trains_with_both_augmentations():
    torch.manual_seed(0)
    model = FMRIEncoder(_no_dropout())
    latent = torch.randn(16, 4)  # fMRI, text and image share a low-dimensional cause
    fmri = (latent @ torch.randn(4, 90) / 2).view(16, 3, 30) + 0.1 * torch.randn(16, 3, 30)
    text, image = latent @ torch.randn(4, 8), latent @ torch.randn(4, 8)
    cond = (latent @ torch.randn(4, 18) / 2).view(16, 3, 6)
    target = model.patchify(fmri)
    g = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        masked, mask = spatial_mask(target, 0.25, g)
        augmented, replaced = temporal_interpolate(masked, 0.34, g)
        out = model(augmented, token_mask=mask)
        loss = neurocine_loss(out, target, mask, replaced, text, image, cond, model.logit_scale).total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
