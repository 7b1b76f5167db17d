"""brainviz.attention: rollout against a hand-written reference, and the encoder's maps on voxels."""

import numpy as np
import pytest
import torch

from brainviz.attention import attention_rollout, encoder_attention
from pipelines.models.neurocine import FMRIEncoder, FMRIEncoderConfig, attention_to_voxels

RNG = np.random.default_rng(0)


def random_attention(batch, heads, n):
    logits = torch.as_tensor(RNG.standard_normal((batch, heads, n, n)), dtype=torch.float32)
    return logits.softmax(dim=-1)


def reference_rollout(layers, residual):
    """Abnar & Zuidema's recipe written out sample by sample in numpy."""
    out = []
    for b in range(layers[0].shape[0]):
        r = np.eye(layers[0].shape[-1])
        for a in layers:
            m = residual * np.eye(a.shape[-1]) + (1 - residual) * a[b].numpy().astype(np.float64).mean(axis=0)
            r = (m / m.sum(axis=1, keepdims=True)) @ r
        out.append(r)
    return np.stack(out)


@pytest.mark.parametrize("residual", [0.0, 0.5, 0.9])
def test_rollout_matches_the_reference_recipe(residual):
    layers = [random_attention(2, 3, 5) for _ in range(3)]
    np.testing.assert_allclose(attention_rollout(layers, residual).numpy(), reference_rollout(layers, residual),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_rollout_rows_sum_to_one_and_identity_attention_rolls_out_to_identity():
    layers = [random_attention(1, 2, 6) for _ in range(4)]
    np.testing.assert_allclose(attention_rollout(layers).sum(dim=-1).numpy(), 1.0, rtol=1e-5)
    eye = torch.eye(4).expand(2, 3, 4, 4)
    np.testing.assert_allclose(attention_rollout([eye, eye]).numpy(), np.broadcast_to(np.eye(4), (2, 4, 4)))


def test_one_layer_without_residual_is_the_head_mean():
    layer = random_attention(2, 4, 5)
    np.testing.assert_allclose(attention_rollout([layer], residual=0.0).numpy(), layer.mean(dim=1).numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = FMRIEncoderConfig(n_voxels=40, window=3, patch_size=8, d_model=16, depth=2, n_heads=2, mlp_dim=16,
                               embed_dim=8, n_cond_tokens=2, cond_dim=4)  # fmt: skip
    return FMRIEncoder(config).eval()


def test_raw_map_is_the_received_attention_of_every_layer(encoder):
    fmri = RNG.standard_normal((2, 3, 40)).astype(np.float32)
    with torch.no_grad():
        weights = encoder(torch.from_numpy(fmri), return_attention=True).attention
    expected = attention_to_voxels(weights, 40, 8).numpy()
    np.testing.assert_allclose(encoder_attention(encoder, fmri, "raw"), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["raw", "rollout"])
def test_maps_give_each_token_one_value_and_sum_to_one_over_tokens(encoder, mode):
    maps = encoder_attention(encoder, RNG.standard_normal((2, 3, 40)), mode)
    assert maps.shape == (2, 40) and maps.dtype == np.float32
    tokens = maps.reshape(2, 5, 8)
    np.testing.assert_allclose(tokens, np.repeat(tokens[:, :, :1], 8, axis=2))
    np.testing.assert_allclose(tokens[:, :, 0].sum(axis=1), 1.0, rtol=1e-5)


def test_errors(encoder):
    with pytest.raises(ValueError, match="expected at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"residual: expected a weight in \[0, 1\)"):
        attention_rollout([random_attention(1, 1, 3)], residual=1.0)
    with pytest.raises(ValueError, match="of one shape"):
        attention_rollout([random_attention(1, 1, 3), random_attention(1, 1, 4)])
    with pytest.raises(ValueError, match="mode: expected one of"):
        encoder_attention(encoder, np.zeros((1, 3, 40)), "gradient")
    with pytest.raises(ValueError, match="fmri"):
        encoder_attention(encoder, np.zeros((1, 3, 41)), "raw")
