"""pipelines.models.video_unet: inflation checked against the 2-D UNet itself, causality, temporal layers, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file

from pipelines.models.video_unet import (
    FrameContext,
    SparseCausalAttnProcessor,
    TemporalAttention,
    VideoUNet,
    inflate_unet,
)

N_FRAMES, SIZE, CHANNELS, TEXT_DIM = 5, 8, 4, 16


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()


def _clip(seed: int = 1, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, CHANNELS, N_FRAMES, SIZE, SIZE, generator=g), torch.randn(batch, 3, TEXT_DIM, generator=g)


def _perturb_temporal(model: VideoUNet, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.temporal_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def _run(model, x, text, t=10) -> torch.Tensor:
    return model(x, t, text)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(a, b, atol=atol, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# reproduces the 2-D model


@pytest.mark.parametrize("temporal", [True, False])
def test_identical_frames_give_the_2d_output_on_every_frame(unet, temporal):
    model = inflate_unet(unet, temporal=temporal)
    x, text = _clip()
    x = x[:, :, :1].expand(-1, -1, N_FRAMES, -1, -1).contiguous()
    out = _run(model, x, text)
    with torch.no_grad():
        reference = unet(x[:, :, 0], 10, encoder_hidden_states=text).sample
    assert out.shape == x.shape
    for f in range(N_FRAMES):
        torch.testing.assert_close(out[:, :, f], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("temporal", [True, False])
def test_frame_0_is_the_2d_output_whatever_the_other_frames(unet, temporal):
    model = inflate_unet(unet, temporal=temporal)
    x, text = _clip()
    out = _run(model, x, text)
    with torch.no_grad():
        reference = [unet(x[:, :, f], 10, encoder_hidden_states=text).sample for f in (0, 1)]
    torch.testing.assert_close(out[:, :, 0], reference[0], atol=1e-5, rtol=0)
    assert not _close(out[:, :, 1], reference[1], 1e-4)  # frame 1 attends to frame 0, not to itself


def test_inflating_leaves_the_2d_model_unchanged(unet):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    model = inflate_unet(unet)
    assert model.unet is not unet and not model.training  # a copy, in the 2-D model's mode
    assert unet.state_dict().keys() == before.keys()
    assert not any(isinstance(p, SparseCausalAttnProcessor) for p in unet.attn_processors.values())
    assert sum(isinstance(p, SparseCausalAttnProcessor) for p in model.unet.attn_processors.values()) == 4
    assert model.config.in_channels == CHANNELS and model.config.sample_size == SIZE
    assert model.dtype == torch.float32 and model.device.type == "cpu" and model.temporal


def test_per_clip_timesteps_match_one_clip_at_a_time(unet):
    model = inflate_unet(unet, temporal=False)
    x, text = _clip(batch=2)
    out = _run(model, x, text, torch.tensor([10, 700]))
    torch.testing.assert_close(out[:1], _run(model, x[:1], text[:1], torch.tensor(10)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], _run(model, x[1:], text[1:], 700.0), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# sparse-causal attention


def _changed(x: torch.Tensor, frame: int, seed: int = 9) -> torch.Tensor:
    y = x.clone()
    y[:, :, frame] = torch.randn(y[:, :, frame].shape, generator=torch.Generator().manual_seed(seed))
    return y


def test_without_temporal_layers_no_frame_sees_a_later_frame(unet):
    model = inflate_unet(unet, temporal=False)
    x, text = _clip()
    out = _run(model, x, text)
    later = _run(model, _changed(_changed(x, 3), 4, seed=10), text)
    torch.testing.assert_close(later[:, :, :3], out[:, :, :3], atol=1e-6, rtol=0)
    assert not _close(later[:, :, 3], out[:, :, 3], 1e-4)
    for earlier in (0, 1):  # frame 2 attends to frames 0 and 1
        assert not _close(_run(model, _changed(x, earlier), text)[:, :, 2], out[:, :, 2], 1e-4)
    # frame 3 attends to frames 0 and 2 only, but frame 2's tokens carry frame 1 from the attention layers below
    assert not _close(_run(model, _changed(x, 1), text)[:, :, 3], out[:, :, 3], 1e-4)


def test_sparse_causal_processor_matches_attention_to_first_and_previous_frame():
    """A single attention layer against a hand-written reference: frame i sees frames 0 and i − 1 only.

    In the full UNet frame 3 still depends on frame 1, through frame 2's output of the attention layer below.
    """
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    attn.set_processor(SparseCausalAttnProcessor(FrameContext(n_frames=4)))
    batch, n_frames, n_tokens = 2, 4, 6
    x = torch.randn(batch * n_frames, n_tokens, 8)
    with torch.no_grad():
        out = attn(x)
        q, k, v = (
            layer(x).view(batch, n_frames, n_tokens, 2, 4).transpose(2, 3)
            for layer in (attn.to_q, attn.to_k, attn.to_v)
        )
        expected = []
        for i in range(n_frames):
            keys = torch.cat([k[:, 0], k[:, max(i - 1, 0)]], dim=2)  # (batch, heads, 2 · n_tokens, 4)
            values = torch.cat([v[:, 0], v[:, max(i - 1, 0)]], dim=2)
            weights = (q[:, i] @ keys.transpose(-1, -2) / 2.0).softmax(dim=-1)  # 1/sqrt(dim_head=4)
            expected.append((weights @ values).transpose(1, 2).reshape(batch, n_tokens, 8))
        expected = attn.to_out[0](torch.stack(expected, dim=1).flatten(0, 1))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)

    frames = x.view(batch, n_frames, n_tokens, 8)
    for frame, seen in ((0, True), (1, False), (2, True), (3, True)):
        y = frames.clone()
        y[:, frame] += 1.0
        with torch.no_grad():
            changed = attn(y.flatten(0, 1)).view_as(frames)
        assert _close(changed[:, 3], out.view_as(frames)[:, 3], 1e-6) != seen, f"frame 3 vs frame {frame}"


# ----------------------------------------------------------------------------------------------------------------------
# temporal layers


def test_trained_temporal_layers_change_the_output_and_see_later_frames(unet):
    model = inflate_unet(unet)
    x, text = _clip()
    before = _run(model, x, text)
    _perturb_temporal(model)
    after = _run(model, x, text)
    assert not _close(after, before, 1e-4)
    assert not _close(_run(model, _changed(x, 3), text)[:, :, 0], after[:, :, 0], 1e-4)  # bidirectional


def test_temporal_parameters_are_only_the_added_layers(unet):
    model = inflate_unet(unet)
    temporal = model.temporal_parameters()
    assert len(temporal) == 4 * 7  # 4 blocks × (LayerNorm 2 + q, k, v + out weight and bias)
    temporal_ids = {id(p) for p in temporal}
    spatial = [p for p in model.parameters() if id(p) not in temporal_ids]
    assert len(temporal_ids) == len(temporal)
    assert sum(p.numel() for p in spatial) == sum(p.numel() for p in unet.parameters())
    modules = [m for m in model.modules() if isinstance(m, TemporalAttention)]
    assert {id(p) for m in modules for p in m.parameters()} == temporal_ids
    assert inflate_unet(unet, temporal=False).temporal_parameters() == []


def test_temporal_layers_are_seeded_and_leave_the_global_random_state(unet):
    torch.manual_seed(5)
    a = inflate_unet(unet, seed=3)
    draw = torch.rand(1)
    torch.manual_seed(5)
    b = inflate_unet(unet, seed=3)
    assert torch.equal(torch.rand(1), draw)
    for p, q in zip(a.temporal_parameters(), b.temporal_parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(inflate_unet(unet, seed=4).temporal_parameters()[2], a.temporal_parameters()[2])


def test_gradients_reach_the_temporal_layers_with_the_2d_model_frozen(unet):
    model = inflate_unet(unet).train()
    for p in model.unet.parameters():
        p.requires_grad_(False)
    for p in model.temporal_parameters():
        p.requires_grad_(True)
    x, text = _clip()
    model(x, 10, text).square().mean().backward()
    outs = [m.attn.to_out[0] for m in model.modules() if isinstance(m, TemporalAttention)]
    assert all(layer.weight.grad.abs().sum() > 0 for layer in outs)  # zero-init: only the output projection learns

    _perturb_temporal(model)
    model.zero_grad()
    model.unet.enable_gradient_checkpointing()  # recomputes the layers in backward: n_frames must still be known
    model(x, 10, text).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.temporal_parameters())


# ----------------------------------------------------------------------------------------------------------------------
# save / load


def test_save_and_load_round_trip(unet, tmp_path):
    model = inflate_unet(unet)
    _perturb_temporal(model)
    x, text = _clip()
    model.save_pretrained(tmp_path / "renderer", meta={"data_key": "abc"})
    loaded = VideoUNet.from_pretrained(tmp_path / "renderer")
    assert loaded.temporal and not loaded.training
    torch.testing.assert_close(_run(loaded, x, text), _run(model, x, text), atol=0, rtol=0)
    saved = json.loads((tmp_path / "renderer" / "video_unet.json").read_text())
    assert saved["temporal"] is True and saved["data_key"] == "abc" and "code_version" in saved

    plain = UNet2DConditionModel.from_pretrained(tmp_path / "renderer" / "unet").eval()  # the clean 2-D weights
    with torch.no_grad():
        torch.testing.assert_close(plain(x[:, :, 2], 10, text).sample, unet(x[:, :, 2], 10, text).sample)
    _run(model, x, text)  # the wrappers are back after saving

    model.save_pretrained(tmp_path / "again")
    assert {p.name for p in (tmp_path / "again").iterdir()} == {"unet", "temporal.safetensors", "video_unet.json"}


def test_save_and_load_without_temporal_layers(unet, tmp_path):
    model = inflate_unet(unet, temporal=False)
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "temporal.safetensors").exists()
    loaded = VideoUNet.from_pretrained(tmp_path)
    x, text = _clip()
    assert not loaded.temporal
    torch.testing.assert_close(_run(loaded, x, text), _run(model, x, text), atol=0, rtol=0)


def test_load_errors(unet, tmp_path):
    model = inflate_unet(unet)
    with pytest.raises(FileNotFoundError, match=r"video_unet.json does not exist; expected a folder written by"):
        VideoUNet.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"meta: expected no keys named \['temporal'\]"):
        model.save_pretrained(tmp_path, meta={"temporal": False})

    model.save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "temporal.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"temporal.safetensors does not exist; VideoUNet.save_pretrained"):
        VideoUNet.from_pretrained(tmp_path / "a")

    inflate_unet(unet, temporal=False).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "video_unet.json").write_text(json.dumps({"temporal": True, "position_encoding": "sinusoidal"}))
    model.save_pretrained(tmp_path / "c")
    state = load_file(tmp_path / "c" / "temporal.safetensors")
    save_file(dict(list(state.items())[1:]), tmp_path / "b" / "temporal.safetensors")
    with pytest.raises(ValueError, match=r"temporal.safetensors does not match the inflated UNet: missing \['down"):
        VideoUNet.from_pretrained(tmp_path / "b")

    (tmp_path / "b" / "video_unet.json").write_text(json.dumps({"temporal": "yes"}))
    with pytest.raises(ValueError, match=r"video_unet.json: expected 'temporal' to be true or false, got 'yes'"):
        VideoUNet.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / "video_unet.json").write_text(json.dumps({"temporal": True, "position_encoding": "rope"}))
    with pytest.raises(ValueError, match=r"expected position_encoding 'sinusoidal', got 'rope'"):
        VideoUNet.from_pretrained(tmp_path / "b")

    (tmp_path / "c" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"unet does not hold config.json and diffusion_pytorch_model"):
        VideoUNet.from_pretrained(tmp_path / "c")


# ----------------------------------------------------------------------------------------------------------------------
# input errors


def test_input_errors(unet):
    model = inflate_unet(unet, temporal=False)
    x, text = _clip()
    layout = r"sample: expected a tensor of shape \(batch, channels=4, n_frames, height, width\), got shape"
    with pytest.raises(ValueError, match=layout + r" \(1, 4, 8, 8\)"):
        model(x[:, :, 0], 10, text)
    with pytest.raises(ValueError, match=layout + r" \(1, 5, 4, 8, 8\)"):
        model(x.transpose(1, 2), 10, text)
    with pytest.raises(TypeError, match=r"sample: expected a torch.Tensor"):
        model(x.numpy(), 10, text)
    with pytest.raises(ValueError, match=r"timestep: expected a scalar or a tensor of shape \(1,\) .*got shape \(2,\)"):
        model(x, torch.tensor([1, 2]), text)
    with pytest.raises(TypeError, match=r"timestep: expected a number or a tensor, got str"):
        model(x, "10", text)
    with pytest.raises(ValueError, match=r"encoder_hidden_states: expected a tensor of shape \(1, n_tokens, 16\)"):
        model(x, 10, text[..., :8])
    with pytest.raises(ValueError, match=r"encoder_hidden_states: .*got shape \(2, 3, 16\)"):
        model(x, 10, text.repeat(2, 1, 1))
    with pytest.raises(TypeError, match=r"encoder_hidden_states: expected a torch.Tensor, got list"):
        model(x, 10, [text])


def test_construction_errors(unet):
    with pytest.raises(TypeError, match=r"unet: expected a diffusers UNet2DConditionModel, got Linear"):
        inflate_unet(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"temporal: expected a bool, got int"):
        inflate_unet(unet, temporal=1)
    fresh = inflate_unet(unet, temporal=False)
    with pytest.raises(RuntimeError, match=r"does not know the number of frames: call the VideoUNet on a clip"):
        fresh.unet(torch.zeros(1, CHANNELS, SIZE, SIZE), 10, torch.zeros(1, 3, TEXT_DIM))
    processor = SparseCausalAttnProcessor(FrameContext(n_frames=2))
    with pytest.raises(ValueError, match=r"SparseCausalAttnProcessor: expected self-attention without a mask"):
        processor(Attention(query_dim=8), torch.zeros(2, 3, 8), encoder_hidden_states=torch.zeros(2, 3, 8))
