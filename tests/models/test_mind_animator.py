"""pipelines.models.mind_animator: decoders, losses, the sparse causal mask, training steps, save/load, errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.models.mind_animator import (
    ConsistencyMotionGenerator,
    MotionGeneratorConfig,
    SemanticDecoder,
    SemanticDecoderConfig,
    StructureDecoder,
    StructureDecoderConfig,
    consistency_loss,
    l1_weight_penalty,
    semantic_loss,
    sparse_causal_mask,
    structure_loss,
    symmetric_info_nce,
    warp_latent,
)

SEM = SemanticDecoderConfig(n_voxels=20, embed_dim=16, n_blocks=2, head_dims=(32,), n_tokens=4, token_dim=8)
STRUCT = StructureDecoderConfig(n_voxels=20, hidden_dim=32, latent_shape=(2, 4, 4))
CMG = MotionGeneratorConfig(
    n_voxels=20, latent_shape=(2, 4, 4), n_frames=6, d_model=16, n_heads=2, ffn_dim=32, fmri_hidden=16
)
CMG_NO_DROPOUT = MotionGeneratorConfig(**{**CMG.__dict__, "dropout": 0.0, "attn_dropout": 0.0, "fmri_dropout": 0.0})


def _train(model, loss_fn, steps: int = 40, lr: float = 3e-3) -> tuple[float, float]:
    """A few Adam steps on one fixed batch; first and last loss."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


# ---------------------------------------------------------------------------------------------------------------------
# losses


def _info_nce_reference(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE written out with explicit sums (independent of the torch code)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = scale * a @ b.T
    rows = np.mean([np.log(np.exp(logits[i]).sum()) - logits[i, i] for i in range(len(a))])
    cols = np.mean([np.log(np.exp(logits[:, j]).sum()) - logits[j, j] for j in range(len(a))])
    return (rows + cols) / 2


def test_symmetric_info_nce_matches_a_hand_written_reference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = symmetric_info_nce(torch.tensor(a), torch.tensor(b), torch.tensor(math.log(1 / 0.07), dtype=torch.float64))
    assert float(got) == pytest.approx(_info_nce_reference(a, b, 1 / 0.07), rel=1e-10)
    big = symmetric_info_nce(torch.tensor(a), torch.tensor(b), torch.tensor(10.0, dtype=torch.float64))
    assert float(big) == pytest.approx(_info_nce_reference(a, b, 100.0), rel=1e-10)  # scale clamped at 100 (CLIP)
    with pytest.raises(
        ValueError, match=r"expected two tensors of the same shape \(batch, embed_dim\), got \(5, 3\) and \(4, 3\)"
    ):
        symmetric_info_nce(torch.zeros(5, 3), torch.zeros(4, 3), torch.tensor(1.0))


def _soft_info_nce_reference(a: np.ndarray, b: np.ndarray, scale: float, tau: float) -> float:
    """SoftCLIP written out: cross-entropy against softmax(b̂ b̂ᵀ / tau) rows, in both directions."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = scale * a @ b.T
    target = np.exp(b @ b.T / tau)
    target /= target.sum(axis=1, keepdims=True)
    log_rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    log_cols = logits.T - np.log(np.exp(logits.T).sum(axis=1, keepdims=True))
    return float((-(target * log_rows).sum(axis=1).mean() - (target * log_cols).sum(axis=1).mean()) / 2)


def test_soft_targets_match_a_reference_and_tie_duplicate_targets():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    got = symmetric_info_nce(torch.tensor(a), torch.tensor(b), scale, target_temperature=0.1)
    assert float(got) == pytest.approx(_soft_info_nce_reference(a, b, 1 / 0.07, 0.1), rel=1e-10)
    # a very low temperature is the hard (diagonal) loss when the targets are distinct
    cold = symmetric_info_nce(torch.tensor(a), torch.tensor(b), scale, target_temperature=1e-4)
    assert float(cold) == pytest.approx(_info_nce_reference(a, b, 1 / 0.07), rel=1e-6)
    # two clips with one caption: swapping their predictions changes the hard loss but not the soft one
    b[1] = b[0]
    swapped = a.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    soft = [float(symmetric_info_nce(torch.tensor(x), torch.tensor(b), scale, 0.05)) for x in (a, swapped)]
    assert soft[0] == pytest.approx(soft[1], rel=1e-12)
    with pytest.raises(ValueError, match=r"target_temperature: expected a number >= 0, got -1"):
        symmetric_info_nce(torch.tensor(a), torch.tensor(b), scale, target_temperature=-1)


def test_semantic_loss_is_the_paper_formula_plus_token_mse():
    torch.manual_seed(0)
    f, t, v = torch.randn(6, 16), torch.randn(6, 16), torch.randn(6, 16)
    tp, tt = torch.randn(6, 4, 8), torch.randn(6, 4, 8)
    scale = torch.tensor(2.0)
    loss = semantic_loss(f, t, v, tp, tt, scale, alpha=0.3, token_weight=0.5)
    text = _info_nce_reference(f.numpy(), t.numpy(), math.exp(2.0))
    video = _info_nce_reference(f.numpy(), v.numpy(), math.exp(2.0))
    mse = float(((tp - tt) ** 2).mean())
    assert float(loss.text) == pytest.approx(text, rel=1e-5)
    assert float(loss.video) == pytest.approx(video, rel=1e-5)
    assert float(loss.tokens) == pytest.approx(mse, rel=1e-6)
    assert float(loss.total) == pytest.approx(0.3 * text + 0.7 * video + 0.5 * mse, rel=1e-5)


def test_semantic_loss_errors():
    f, tokens = torch.zeros(2, 16), torch.zeros(2, 4, 8)
    with pytest.raises(ValueError, match=r"alpha: expected a weight in \[0, 1\], got 1.5"):
        semantic_loss(f, f, f, tokens, tokens, torch.tensor(1.0), alpha=1.5)
    with pytest.raises(
        ValueError, match=r"video_emb: expected a tensor of shape \(2, 16\) like f, got shape \(2, 15\)"
    ):
        semantic_loss(f, f, torch.zeros(2, 15), tokens, tokens, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"tokens_true: expected a tensor of shape \(2, 4, 8\) like tokens_pred"):
        semantic_loss(f, f, f, tokens, torch.zeros(2, 5, 8), torch.tensor(1.0))


def test_l1_weight_penalty_sums_weight_matrices_only():
    model = StructureDecoder(STRUCT)
    expected = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(l1_weight_penalty(model), expected)
    assert float(l1_weight_penalty(torch.nn.LayerNorm(3))) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# semantic decoder


def test_semantic_decoder_shapes_and_init():
    model = SemanticDecoder(SEM)
    out = model(torch.randn(3, 20))
    assert out.embedding.shape == (3, 16) and out.tokens.shape == (3, 4, 8)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.trunk.modules()) == 1 + SEM.n_blocks
    assert all(not m.bias.detach().any() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_semantic_out_proj_lets_the_embedding_take_either_sign():
    torch.manual_seed(0)
    plain = SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "n_blocks": 0})).eval()
    projected = SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "n_blocks": 0, "out_proj": True})).eval()
    fmri = torch.randn(64, 20)
    # without it f ends in GELU, whose minimum is about -0.17: the embedding cannot point into a negative orthant
    assert plain(fmri).embedding.min() > -0.171
    assert projected(fmri).embedding.min() < -0.5
    last = projected.trunk[-1]
    assert isinstance(last, torch.nn.Linear) and (last.in_features, last.out_features) == (16, 16)
    torch.testing.assert_close(projected(fmri).embedding, last(projected.trunk[:-1](fmri)))


def test_semantic_linear_readout_starts_as_the_given_map():
    torch.manual_seed(0)
    model = SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "out_proj": True, "linear_readout": True})).eval()
    weight, bias = torch.randn(16, 20), torch.randn(16)
    model.set_readout(weight.numpy(), bias.numpy())
    fmri = torch.randn(5, 20)
    torch.testing.assert_close(model(fmri).embedding, fmri @ weight.T + bias)  # the trunk starts silent
    with torch.no_grad():
        model.trunk[-1].weight.fill_(0.1)
    assert not torch.allclose(model(fmri).embedding, fmri @ weight.T + bias)  # and adds to it once trained
    factored = SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "out_proj": True, "linear_readout": True}))
    factored.set_readout((weight[:, :3].numpy(), torch.eye(3, 20).numpy()), bias.numpy())  # = weight's first 3 columns
    torch.testing.assert_close(factored.readout.weight, torch.cat([weight[:, :3], torch.zeros(16, 17)], dim=1))
    with pytest.raises(ValueError, match=r"weight: expected shape \(16, 20\), got \(20, 16\)"):
        model.set_readout(weight.T, bias)
    with pytest.raises(ValueError, match=r"bias: expected shape \(16,\), got \(15,\)"):
        model.set_readout(weight, bias[:15])
    with pytest.raises(ValueError, match="set_readout: expected a decoder built with linear_readout=True"):
        SemanticDecoder(SEM).set_readout(weight, bias)
    with pytest.raises(ValueError, match="expected out_proj=True with linear_readout=True"):
        SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "linear_readout": True}))


def test_semantic_decoder_trains():
    torch.manual_seed(0)
    model = SemanticDecoder(SEM)
    fmri, text, video, tokens = torch.randn(16, 20), torch.randn(16, 16), torch.randn(16, 16), torch.randn(16, 4, 8)

    def loss():
        out = model(fmri)
        return semantic_loss(out.embedding, text, video, out.tokens, tokens, model.logit_scale).total

    first, last = _train(model, loss)
    assert last < 0.5 * first


def test_semantic_decoder_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SemanticDecoder(SEM).eval()
    x = torch.randn(2, 20)
    model.save_pretrained(tmp_path / "sem")
    back = SemanticDecoder.from_pretrained(tmp_path / "sem")
    assert back.config == model.config and not back.training
    for a, b in zip(back(x), model(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_semantic_decoder_errors(tmp_path):
    with pytest.raises(ValueError, match="SemanticDecoderConfig.n_voxels: expected a positive integer, got 0"):
        SemanticDecoder(SemanticDecoderConfig(n_voxels=0))
    with pytest.raises(ValueError, match=r"expected n_blocks >= 0 and positive head_dims, got n_blocks=-1"):
        SemanticDecoder(SemanticDecoderConfig(n_blocks=-1))
    with pytest.raises(ValueError, match=r"SemanticDecoderConfig.dropout: expected a probability in \[0, 1\), got 1.0"):
        SemanticDecoder(SemanticDecoderConfig(dropout=1.0))
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, 20\), got shape \(3, 21\)"):
        SemanticDecoder(SEM)(torch.zeros(3, 21))
    with pytest.raises(TypeError, match="fmri: expected a torch.Tensor"):
        SemanticDecoder(SEM)(np.zeros((3, 20)))
    SemanticDecoder(SEM).save_pretrained(tmp_path / "sem")
    (tmp_path / "sem" / "config.json").write_text(json.dumps({**SEM.__dict__, "n_voxel": 3}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_voxel'\] for SemanticDecoderConfig"):
        SemanticDecoder.from_pretrained(tmp_path / "sem")
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        SemanticDecoder.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------------------
# structure decoder


def test_structure_decoder_shapes_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = StructureDecoder(STRUCT)
    fmri, target = torch.randn(16, 20), torch.randn(16, 2, 4, 4)
    assert model(fmri).shape == (16, 2, 4, 4)
    first, last = _train(model, lambda: structure_loss(model(fmri), target) + 1e-6 * l1_weight_penalty(model))
    assert last < 0.5 * first
    model.eval().save_pretrained(tmp_path / "struct")
    back = StructureDecoder.from_pretrained(tmp_path / "struct")
    torch.testing.assert_close(back(fmri), model(fmri), rtol=0, atol=0)


def test_structure_linear_readout_represents_a_low_rank_map_exactly():
    config = StructureDecoderConfig(**{**STRUCT.__dict__, "hidden_dim": 6, "linear_readout": True})
    torch.manual_seed(0)
    model = StructureDecoder(config).eval()
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((32, 4)) @ rng.standard_normal((4, 20))  # rank 4 <= hidden_dim 6
    bias = rng.standard_normal(32)
    model.set_readout(weight, bias)
    fmri = rng.standard_normal((5, 20))
    got = model(torch.tensor(fmri, dtype=torch.float32)).reshape(5, -1).detach().numpy()
    np.testing.assert_allclose(got, fmri @ weight.T + bias, rtol=1e-4, atol=1e-4)  # the branch starts silent
    # a map of higher rank: its best rank-6 approximation (Eckart-Young), built here from the singular values
    full = rng.standard_normal((32, 20))
    model.set_readout(full, bias)
    u, s, vt = np.linalg.svd(full)
    got = model(torch.tensor(fmri, dtype=torch.float32)).reshape(5, -1).detach().numpy()
    np.testing.assert_allclose(got, fmri @ (u[:, :6] * s[:6] @ vt[:6]).T + bias, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"set_readout: expected weight of shape \(32, 20\), got \(20, 32\)"):
        model.set_readout(full.T, bias)
    with pytest.raises(ValueError, match=r"set_readout: expected bias of shape \(32,\), got \(20,\)"):
        model.set_readout(full, bias[:20])
    with pytest.raises(ValueError, match="set_readout: expected a decoder built with linear_readout=True"):
        StructureDecoder(STRUCT).set_readout(full, bias)


def test_set_low_rank_from_factors_equals_from_their_product():
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((32, 7)), rng.standard_normal((7, 20))  # a rank-7 map, given as factors
    bias = rng.standard_normal(32)
    fmri = torch.tensor(rng.standard_normal((5, 20)), dtype=torch.float32)
    for hidden in (6, 9):  # cut below the map's rank, and above it (exact)
        config = StructureDecoderConfig(**{**STRUCT.__dict__, "hidden_dim": hidden, "linear_readout": True})
        torch.manual_seed(0)
        whole, factored = StructureDecoder(config).eval(), StructureDecoder(config).eval()
        whole.set_readout(left @ right, bias)
        factored.set_readout((left, right), bias)
        torch.testing.assert_close(factored(fmri), whole(fmri), rtol=1e-5, atol=1e-5)
    expected = fmri.double() @ torch.from_numpy(left @ right).T + torch.from_numpy(bias)
    torch.testing.assert_close(factored(fmri).reshape(5, -1).double(), expected, rtol=1e-4, atol=1e-4)


def test_readout_factor_errors():
    config = StructureDecoderConfig(**{**STRUCT.__dict__, "hidden_dim": 6, "linear_readout": True})
    model, bias = StructureDecoder(config), np.zeros(32)
    with pytest.raises(ValueError, match=r"set_readout: expected a pair of factors \(left, right\), got 3 arrays"):
        model.set_readout((np.zeros((32, 2)), np.zeros((2, 20)), np.zeros(1)), bias)
    with pytest.raises(
        ValueError,
        match=r"set_readout: expected factors of shapes \(32, k\) and \(k, 20\), got \(32, 2\) and \(3, 20\)",
    ):
        model.set_readout((np.zeros((32, 2)), np.zeros((3, 20))), bias)
    semantic = SemanticDecoder(SemanticDecoderConfig(**{**SEM.__dict__, "out_proj": True, "linear_readout": True}))
    with pytest.raises(ValueError, match=r"set_readout: expected factors of shapes \(n_out, k\) and \(k, n_in\)"):
        semantic.set_readout((np.zeros((4, 2)), np.zeros((3, 20))), np.zeros(4))


def test_structure_decoder_errors():
    with pytest.raises(ValueError, match=r"latent_shape of 3 positive sizes, got n_blocks=2, latent_shape=\(4, 4\)"):
        StructureDecoder(StructureDecoderConfig(latent_shape=(4, 4)))
    with pytest.raises(ValueError, match="StructureDecoderConfig.hidden_dim: expected a positive integer, got 0"):
        StructureDecoder(StructureDecoderConfig(hidden_dim=0))
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(batch, 20\), got shape \(20,\)"):
        StructureDecoder(STRUCT)(torch.zeros(20))
    with pytest.raises(
        ValueError, match=r"target: expected a tensor of shape \(1, 2, 4, 4\) like pred, got shape \(1, 2, 4, 5\)"
    ):
        structure_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))


# ---------------------------------------------------------------------------------------------------------------------
# sparse causal mask


def test_mask_is_causal_and_frame_zero_is_always_visible():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        mask = sparse_causal_mask(7, 0.5, g)
        assert mask.dtype == torch.bool and mask.shape == (7, 7)
        assert not bool(mask.triu(1).any())  # no query sees a later key
        assert bool(mask[:, 0].all())  # frame 0 always visible
        assert mask[0].tolist() == [True] + [False] * 6 and mask[1].tolist() == [True, True] + [False] * 5


def test_mask_extremes_and_inference_variant():
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert torch.equal(sparse_causal_mask(6, 1.0), causal)
    inference = sparse_causal_mask(6, 0.0)  # the reference's inference setting
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[:, 0] = True
    expected[1, 1] = True
    assert torch.equal(inference, expected)  # rows >= 2 see frame 0 only (not even themselves)
    assert torch.equal(sparse_causal_mask(1, 0.3), torch.ones(1, 1, dtype=torch.bool))
    assert torch.equal(sparse_causal_mask(2, 0.0), torch.ones(2, 2, dtype=torch.bool).tril())


def test_mask_drop_rate_includes_the_diagonal():
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sparse_causal_mask(8, 0.6, g) for _ in range(4000)]).float().mean(0)
    rows, cols = torch.tril_indices(8, 8)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if i >= 2 and j >= 1:  # thinned entries, diagonal included: kept with probability 0.6
            assert float(draws[i, j]) == pytest.approx(0.6, abs=0.04), (i, j)
        else:
            assert float(draws[i, j]) == 1.0, (i, j)
    assert float(draws.triu(1).sum()) == 0.0


def test_mask_is_resampled_every_call_and_seeded():
    g = torch.Generator().manual_seed(2)
    masks = [sparse_causal_mask(8, 0.5, g) for _ in range(5)]
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 1
    a = sparse_causal_mask(8, 0.5, torch.Generator().manual_seed(3))
    b = sparse_causal_mask(8, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mask_errors():
    with pytest.raises(ValueError, match=r"keep_prob: expected a probability in \[0, 1\], got 1.2"):
        sparse_causal_mask(4, 1.2)
    with pytest.raises(ValueError, match="n_frames: expected a positive integer, got 0"):
        sparse_causal_mask(0, 0.5)


# ---------------------------------------------------------------------------------------------------------------------
# Consistency Motion Generator


def test_cmg_shapes_and_attention_follows_the_mask():
    torch.manual_seed(0)
    model = ConsistencyMotionGenerator(CMG).eval()
    latents, fmri = torch.randn(2, 5, 2, 4, 4), torch.randn(2, 20)
    causal = sparse_causal_mask(5, 1.0)
    out = model(latents, fmri, mask=causal)
    assert out.shape == latents.shape
    later = latents.clone()
    later[:, 3] += 1.0
    changed = model(later, fmri, mask=causal)
    torch.testing.assert_close(changed[:, :3], out[:, :3])  # causal: frame 3 cannot reach outputs 0..2
    assert not torch.allclose(changed[:, 3:], out[:, 3:])
    # eval default = the inference mask: rows >= 2 attend to frame 0 only, so frame 1 reaches output 1 alone
    base = model(latents, fmri)
    moved = latents.clone()
    moved[:, 1] += 1.0
    other = model(moved, fmri)
    torch.testing.assert_close(other[:, 2:], base[:, 2:])
    torch.testing.assert_close(other[:, 0], base[:, 0])
    assert not torch.allclose(other[:, 1], base[:, 1])


def test_cmg_predict_delta_adds_the_input_frame():
    model = ConsistencyMotionGenerator(replace(CMG, predict_delta=True)).eval()
    torch.nn.init.zeros_(model.out.weight)  # the network's own output is 0: only the residual remains
    torch.nn.init.zeros_(model.out.bias)
    latents, fmri = torch.randn(2, 4, 2, 4, 4), torch.randn(2, 20)
    torch.testing.assert_close(model(latents, fmri), latents)


def test_warp_latent_moves_content_by_the_flow():
    torch.manual_seed(0)
    latent = torch.randn(2, 3, 6, 7)
    zero = torch.zeros(2, 2, 1, 1)
    torch.testing.assert_close(warp_latent(latent, zero), latent)
    right_down = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1)  # 1 px right, 2 px down
    moved = warp_latent(latent, right_down)
    torch.testing.assert_close(moved[..., 2:, 1:], latent[..., :-2, :-1])  # out(p) = latent(p - flow)
    torch.testing.assert_close(moved[..., :2, 1:], latent[..., :1, :-1].expand(-1, -1, 2, -1))  # border padding
    # a half-pixel shift averages neighbours (bilinear); a grid flow that is constant equals the global flow
    half = warp_latent(latent, torch.tensor([0.5, 0.0]).view(1, 2, 1, 1).repeat(2, 1, 1, 1))
    torch.testing.assert_close(half[..., 1:], 0.5 * (latent[..., 1:] + latent[..., :-1]))
    torch.testing.assert_close(warp_latent(latent, right_down.repeat(1, 1, 3, 3)), moved)
    # a 2 x 2 grid: the flow is interpolated between corner vectors (left column still, right column 1 px right)
    grid = torch.zeros(2, 2, 2, 2)
    grid[:, 0, :, 1] = 1.0
    out = warp_latent(latent, grid)
    torch.testing.assert_close(out[..., 0], latent[..., 0])
    torch.testing.assert_close(out[..., -1], latent[..., -2])
    with pytest.raises(ValueError, match=r"latent: expected \(batch, channels, h, w\), got shape \(3, 6, 7\)"):
        warp_latent(latent[0], zero)
    with pytest.raises(ValueError, match=r"flow: expected \(2, 2, g, g\), got shape \(2, 2, 1, 2\)"):
        warp_latent(latent, torch.zeros(2, 2, 1, 2))


def test_cmg_warp_starts_as_the_identity_and_learns_a_velocity():
    torch.manual_seed(0)
    config = replace(CMG_NO_DROPOUT, latent_shape=(2, 8, 8), warp_grid=1)
    model = ConsistencyMotionGenerator(config).eval()
    torch.nn.init.zeros_(model.out.weight)  # the decoded change is 0: only the warp remains, at first the identity
    torch.nn.init.zeros_(model.out.bias)
    latents, fmri = torch.randn(4, 5, 2, 8, 8), torch.randn(4, 20)
    torch.testing.assert_close(model(latents, fmri), latents)
    # smooth patterns drifting by +0.5 px per frame, rightwards for the first two clips and leftwards for the others
    xs = torch.arange(8.0)
    speed = torch.tensor([0.5, 0.5, -0.5, -0.5])
    video = torch.stack(
        [torch.sin((xs - speed[:, None] * t) * 0.7)[:, None, None, :].expand(4, 2, 8, 8) for t in range(6)], dim=1
    )
    fmri = torch.zeros(4, 20)
    fmri[:, 0] = speed * 4  # the fMRI says which way
    model.train()
    optimiser = torch.optim.Adam(model.flow.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        consistency_loss(model(video[:, :-1], fmri), video[:, 1:]).backward()
        optimiser.step()
    model.eval()
    loss = consistency_loss(model(video[:, :-1], fmri), video[:, 1:]).item()
    still = consistency_loss(video[:, :-1], video[:, 1:]).item()
    flipped = consistency_loss(model(video[:, :-1], -fmri), video[:, 1:]).item()
    assert loss < 0.25 * still  # what enters at the border cannot be warped in
    assert flipped > 2 * loss  # the velocity comes from the fMRI


def test_cmg_draws_a_new_training_mask_each_call():
    torch.manual_seed(0)
    model = ConsistencyMotionGenerator(CMG_NO_DROPOUT).train()
    latents, fmri = torch.randn(2, 5, 2, 4, 4), torch.randn(2, 20)
    g = torch.Generator().manual_seed(0)
    outs = [model(latents, fmri, generator=g) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    a = model(latents, fmri, generator=torch.Generator().manual_seed(5))
    b = model(latents, fmri, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cmg_trains_teacher_forced():
    torch.manual_seed(0)
    model = ConsistencyMotionGenerator(CMG_NO_DROPOUT)
    base = torch.randn(8, 1, 2, 4, 4)
    latents = torch.cat([base.roll(t, dims=-1) for t in range(6)], dim=1)  # a pattern moving right
    fmri = torch.randn(8, 20)
    g = torch.Generator().manual_seed(0)
    loss = lambda: consistency_loss(model(latents[:, :-1], fmri, generator=g), latents[:, 1:])  # noqa: E731
    first, last = _train(model, loss, steps=80)
    assert last < 0.5 * first


def test_cmg_generate_is_autoregressive(tmp_path):
    torch.manual_seed(0)
    model = ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "inference_keep_prob": 1.0}))
    model.train()
    first, fmri = torch.randn(2, 2, 4, 4), torch.randn(2, 20)
    video = model.generate(first, fmri)
    assert video.shape == (2, 6, 2, 4, 4) and model.training  # mode restored
    torch.testing.assert_close(video[:, 0], first, rtol=0, atol=0)
    model.eval()
    for t in range(1, 6):  # each frame is the last output of the sequence before it
        torch.testing.assert_close(video[:, t], model(video[:, :t], fmri)[:, -1])
    assert model.generate(first, fmri, n_frames=1).shape == (2, 1, 2, 4, 4)
    model.save_pretrained(tmp_path / "cmg")
    back = ConsistencyMotionGenerator.from_pretrained(tmp_path / "cmg")
    torch.testing.assert_close(back.generate(first, fmri), model.generate(first, fmri), rtol=0, atol=0)


def test_cmg_errors():
    with pytest.raises(ValueError, match="d_model: expected an even multiple of n_heads=3, got 16"):
        ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "n_heads": 3}))
    with pytest.raises(ValueError, match="n_frames: expected at least 2 frames, got 1"):
        ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "n_frames": 1}))
    with pytest.raises(ValueError, match=r"train_keep_prob: expected a probability in \[0, 1\], got 2.0"):
        ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "train_keep_prob": 2.0}))
    with pytest.raises(ValueError, match=r"warp_grid: expected an integer >= 0 \(0 = no warp\), got -1"):
        ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "warp_grid": -1}))
    with pytest.raises(ValueError, match=r"latent_shape: expected 3 positive sizes \(channels, h, w\), got \(2, 4\)"):
        ConsistencyMotionGenerator(MotionGeneratorConfig(**{**CMG.__dict__, "latent_shape": (2, 4)}))
    model = ConsistencyMotionGenerator(CMG).eval()
    fmri = torch.zeros(2, 20)
    with pytest.raises(
        ValueError, match=r"latents: expected a tensor of shape \(batch, n_in <= 6, 2, 4, 4\), got shape \(2, 3, 2, 4\)"
    ):
        model(torch.zeros(2, 3, 2, 4), fmri)
    with pytest.raises(ValueError, match="latents: expected 1 to 6 input frames, got 7"):
        model(torch.zeros(2, 7, 2, 4, 4), fmri)
    with pytest.raises(ValueError, match=r"fmri: expected a tensor of shape \(2, 20\), got shape \(3, 20\)"):
        model(torch.zeros(2, 3, 2, 4, 4), torch.zeros(3, 20))
    with pytest.raises(ValueError, match=r"mask: expected a tensor of shape \(3, 3\), got shape \(4, 4\)"):
        model(torch.zeros(2, 3, 2, 4, 4), fmri, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        model(torch.zeros(2, 3, 2, 4, 4), fmri, mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"n_frames: expected an integer in \[1, 6\], got 7"):
        model.generate(torch.zeros(2, 2, 4, 4), fmri, n_frames=7)
    with pytest.raises(ValueError, match=r"first_latent: expected a tensor of shape \(batch, 2, 4, 4\)"):
        model.generate(torch.zeros(2, 1, 2, 4, 4), fmri)
    with pytest.raises(ValueError, match=r"target: expected a tensor of shape \(1, 2, 2, 4, 4\) like pred"):
        consistency_loss(torch.zeros(1, 2, 2, 4, 4), torch.zeros(1, 3, 2, 4, 4))
