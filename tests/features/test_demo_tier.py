"""The demo tier: built from configs, saved as safetensors + JSON, loaded back identical through load_backbone."""

import json

import numpy as np
import pytest
import torch

from pipelines.features import demo_tier
from pipelines.features.backbones import load_backbone
from tests.features.conftest import TINY

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)


def test_preset_builds_the_documented_sizes():
    config = demo_tier.default_config()
    assert config.clip.text_width == 128 and config.vae.image_size == 64
    unet = demo_tier.build_unet(config)
    assert unet.config.sample_size == 16 and unet.config.cross_attention_dim == 128
    assert sum(p.numel() for p in demo_tier.build_vae(config.vae).parameters()) < 2_000_000


def test_clip_round_trip(tiny_backbones, caplog):
    root, modules = tiny_backbones
    with caplog.at_level("WARNING"):
        enc = load_backbone("clip", "demo", root)
    assert "initialized randomly" not in caplog.text  # open_clip's warning is false here: trained weights follow
    with caplog.at_level("WARNING"):
        demo_tier.build_clip(TINY.clip)
    assert "No pretrained weights loaded" in caplog.text  # building from scratch still says so
    assert enc.name.startswith("demo:clip:") and enc.embed_dim == 16
    img = enc.encode_image(FRAMES)
    assert img.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    tokens = demo_tier.clip_tokenizer(TINY.clip)(["a red ball"])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(modules["clip"].encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_text(["a red ball"]), ref, atol=1e-5)
    assert enc.text_tokens(["a red ball", "a cat"]).shape == (2, 16, 32)
    with pytest.raises(TypeError, match="captions: expected a list of str, got str"):
        enc.encode_text("a red ball")


def test_vae_round_trip(tiny_backbones):
    root, modules = tiny_backbones
    vae = load_backbone("vae", "demo", root)
    assert vae.scaling_factor == 0.5
    z = vae.encode(FRAMES)
    assert z.shape == (2, 4, 16, 16)
    x = torch.nn.functional.interpolate(
        torch.from_numpy(FRAMES).permute(0, 3, 1, 2).float() / 255, size=(32, 32), mode="bilinear", antialias=True
    )
    with torch.no_grad():
        ref = modules["vae"].encode(x * 2 - 1).latent_dist.mean * 0.5
    np.testing.assert_allclose(z, ref.numpy(), atol=1e-4)
    assert vae.decode(z).shape == (2, 32, 32, 3)


def test_renderer_uses_the_clip_text_tokens(tiny_backbones):
    root, _ = tiny_backbones
    renderer = load_backbone("unet", "demo", root)
    cond = renderer.condition(["a red ball"])
    assert cond.shape == (1, 16, 32)
    with torch.no_grad():
        out = renderer.unet(torch.zeros(1, 4, 16, 16), 10, torch.from_numpy(cond)).sample
    assert out.shape == (1, 4, 16, 16)


def test_raft_and_classifiers(tiny_backbones):
    root, _ = tiny_backbones
    flow = load_backbone("raft", "demo", root)(FRAMES, FRAMES)
    assert flow.shape == (2, 40, 40, 2) and np.isfinite(flow).all()
    frame = load_backbone("frame_classifier", "demo", root)
    assert frame.labels == ("ball", "car", "star") and frame.logits(FRAMES).shape == (2, 3)
    video = load_backbone("video_classifier", "demo", root)
    clips = np.stack([FRAMES, FRAMES[::-1]])
    np.testing.assert_allclose(video.logits(clips), frame.logits(FRAMES).mean(0, keepdims=True).repeat(2, 0), atol=1e-5)
    with pytest.raises(ValueError, match=r"videos: expected shape \(n_videos, n_frames, height, width, 3\)"):
        video.logits(FRAMES)


def test_weights_identity_changes_with_the_weights(tiny_backbones, tmp_path):
    root, modules = tiny_backbones
    demo_tier.save_raft(modules["raft"], TINY.raft, tmp_path / "raft")
    same = load_backbone("raft", "demo", tmp_path).name
    assert same == load_backbone("raft", "demo", root).name
    with torch.no_grad():
        next(modules["raft"].parameters()).add_(1.0)
    demo_tier.save_raft(modules["raft"], TINY.raft, tmp_path / "raft")
    assert load_backbone("raft", "demo", tmp_path).name != same


def test_missing_and_mismatched_folders(tiny_backbones, tmp_path):
    root, modules = tiny_backbones
    with pytest.raises(FileNotFoundError, match=r"clip does not exist; expected the demo-tier clip saved there"):
        load_backbone("clip", "demo", tmp_path)
    bad = tmp_path / "raft"
    demo_tier.save_raft(modules["raft"], TINY.raft, bad)
    (bad / "config.json").write_text(json.dumps({"arch": "raft_large", "num_flow_updates": 2}))
    with pytest.raises(ValueError, match=r"expected arch 'raft_small', got 'raft_large'"):
        load_backbone("raft", "demo", tmp_path)
    demo_tier.save_clip(modules["clip"], demo_tier.DemoClipConfig(), tmp_path / "clip")  # weights of another size
    with pytest.raises(
        ValueError, match=r"(?s)clip/model.safetensors does not match the architecture in config.json.*size mismatch"
    ):
        load_backbone("clip", "demo", tmp_path)


def test_clip_with_a_resnet_tower_builds_saves_and_loads(tmp_path):
    config = demo_tier.DemoClipConfig(embed_dim=16, image_size=32, vision_tower="resnet", resnet_layers=(1, 1, 1, 1),
                                      resnet_width=8, context_length=16, text_width=32, text_heads=2, text_layers=1)  # fmt: skip
    torch.manual_seed(0)
    model = demo_tier.build_clip(config)
    assert type(model.visual).__name__ == "ModifiedResNet"
    demo_tier.save_clip(model, config, tmp_path / "clip")
    encoder = load_backbone("clip", "demo", tmp_path)
    images = encoder.encode_image(FRAMES)
    assert images.shape == (2, 16)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.from_numpy(FRAMES).permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                                            mode="bicubic", align_corners=False, antialias=True)  # fmt: skip
        mean = torch.tensor(demo_tier.OPENAI_MEAN)[:, None, None]
        std = torch.tensor(demo_tier.OPENAI_STD)[:, None, None]
        ref = torch.nn.functional.normalize(model.eval().encode_image((x.clamp(0, 1) - mean) / std), dim=-1).numpy()
    np.testing.assert_allclose(images, ref, atol=1e-4)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"vision_tower": "cnn"}, "vision_tower: expected 'vit' or 'resnet', got 'cnn'"),
        ({"vision_tower": "resnet", "image_size": 40}, "image_size: expected a multiple of 32 .* got 40"),
        (
            {"vision_tower": "resnet", "resnet_layers": (1, 1, 1)},
            r"resnet_layers: expected 4 positive .* got \[1, 1, 1\]",
        ),
    ],
)
def test_clip_config_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        demo_tier.DemoClipConfig(**changes)
