"""Full-tier backbones: random-weight wiring, architectures against published facts, and the offline errors.

The big models (SD UNet 860 M, CLIP ViT-B/32, ViT-B/16, VideoMAE) are built one at a time and deleted after use,
so that the file stays under ~5 GB of memory.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from pipelines.features import backbones, full_tier
from pipelines.features.backbones import BackboneUnavailableError

# diffusers 0.42 passes an argument huggingface_hub 2.x deprecated, whenever it looks for a file in the cache.
pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated:UserWarning")

FRAMES = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------- offline errors


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Hub offline mode, empty caches in tmp_path, and every DNS lookup and socket connection refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


OFFLINE_CASES = {
    "clip": "open_clip ViT-B-32 pretrained='openai' (Hugging Face repo timm/vit_base_patch32_clip_224.openai",
    "vae": "stable-diffusion-v1-5/stable-diffusion-v1-5 (AutoencoderKL, subfolder vae)",
    "unet": "stable-diffusion-v1-5/stable-diffusion-v1-5 (CLIPTextModel, subfolder text_encoder)",
    "raft": "torchvision Raft_Large_Weights.C_T_SKHT_V2 (https://download.pytorch.org/models/raft_large_C_T_SKHT_V2",
    "frame_classifier": "torchvision ViT_B_16_Weights.IMAGENET1K_V1 (https://download.pytorch.org/models/vit_b_16",
    "video_classifier": "MCG-NJU/videomae-base-finetuned-kinetics (VideoMAEImageProcessor)",
    "captioner": "Salesforce/blip2-opt-2.7b (Blip2Processor)",
}


@pytest.mark.parametrize("role", list(OFFLINE_CASES))
def test_pretrained_offline_raises_with_the_weights_named(role, no_network):
    with pytest.raises(BackboneUnavailableError, match=re.escape(OFFLINE_CASES[role])) as info:
        full_tier.load(role, pretrained=True)
    message = str(info.value)
    assert message.startswith(f"{role}: cannot load the full-tier weights")
    assert "network disabled in this test" in message or "HF_HUB_OFFLINE is set" in message
    assert "HF_HOME" in message or "TORCH_HOME" in message
    assert message.endswith("or use tier demo.")


@pytest.mark.parametrize("role", ["clip", "vae", "captioner"])
def test_without_offline_mode_one_probe_decides(role, no_network, monkeypatch):
    """No network and no HF_HUB_OFFLINE: one refused connection (the probe), then the cache only, no retry loop."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import, and tests/conftest.py sets it
    host = urllib.parse.urlsplit(constants.ENDPOINT).hostname
    with pytest.raises(BackboneUnavailableError, match=f"cannot connect to {host}:443: network disabled in this test"):
        full_tier.load(role)
    assert len(no_network) == 1


# ------------------------------------------------------------------------------------------------- pretrained=True
# The published weights cannot be downloaded here, so these tests put random weights where a download would leave
# them (the Hugging Face cache under HF_HOME, the torch cache under TORCH_HOME) and run the pretrained=True code.


def hub_snapshot(repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the Hugging Face cache under HF_HOME, laid out as a download leaves it."""
    repo = Path(os.environ["HF_HOME"], "hub", f"models--{repo_id.replace('/', '--')}")
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    return repo / "snapshots" / commit


def first_parameter(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters()).detach()


def test_raft_pretrained_from_the_torch_cache(no_network):
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    model = raft_large()
    cache = Path(os.environ["TORCH_HOME"], "hub", "checkpoints")
    cache.mkdir(parents=True)
    torch.save(model.state_dict(), cache / Path(Raft_Large_Weights.DEFAULT.url).name)
    flow_estimator = full_tier.load_raft(pretrained=True)
    assert flow_estimator.name == "full:raft_large/C_T_SKHT_V2"
    assert torch.equal(first_parameter(flow_estimator.model), first_parameter(model))
    assert no_network == []  # a cached file needs no probe


def test_vae_pretrained_from_the_hub_cache(no_network):
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_config(full_tier.read_architecture("sd15_vae.json"))
    model.save_pretrained(hub_snapshot("stable-diffusion-v1-5/stable-diffusion-v1-5") / "vae")
    vae = full_tier.load_vae(pretrained=True)
    assert vae.name == "full:sd15-vae/stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert torch.equal(first_parameter(vae.model), first_parameter(model))


@pytest.mark.slow
def test_clip_pretrained_from_the_hub_cache(no_network):
    from safetensors.torch import save_file

    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
    save_file(model.state_dict(), hub_snapshot("timm/vit_base_patch32_clip_224.openai") / "open_clip_model.safetensors")
    encoder = full_tier.load_clip(pretrained=True)
    assert encoder.name == "full:ViT-B-32/openai"
    assert torch.equal(first_parameter(encoder.model), first_parameter(model))
    del model, encoder


@pytest.mark.slow
def test_video_classifier_pretrained_reads_the_repo_normalisation(no_network):
    from transformers import VideoMAEImageProcessor

    model = full_tier.load_video_classifier(pretrained=False).model
    snapshot = hub_snapshot("MCG-NJU/videomae-base-finetuned-kinetics")
    model.save_pretrained(snapshot)
    VideoMAEImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(snapshot)
    classifier = full_tier.load_video_classifier(pretrained=True)
    assert classifier.name == "full:videomae-base/MCG-NJU/videomae-base-finetuned-kinetics"
    assert classifier.forward.keywords["mean"] == classifier.forward.keywords["std"] == (0.5, 0.5, 0.5)
    assert classifier.labels[:2] == ("abseiling", "air drumming")  # from the saved config's id2label
    assert torch.equal(first_parameter(classifier.model), first_parameter(model))
    del model, classifier


@pytest.mark.slow
def test_renderer_pretrained_without_tokenizer_files_is_unavailable(no_network):
    """transformers 5 returns a 2-token CLIPTokenizer, instead of raising, when its files are not in the cache."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(**full_tier.read_architecture("sd15_text_encoder.json")))
    text_encoder.save_pretrained(hub_snapshot("stable-diffusion-v1-5/stable-diffusion-v1-5") / "text_encoder")
    del text_encoder
    with pytest.raises(BackboneUnavailableError, match=r"\(CLIPTokenizer, subfolder tokenizer\) .*expected 49408"):
        full_tier.load_renderer(pretrained=True)


def test_hf_cache_is_resolved_at_call_time(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert full_tier._hf_cache_dir() == str(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert full_tier._hf_cache_dir() == str(tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------------- registry, dispatch


def test_every_role_has_a_loader():
    assert list(full_tier.LOADERS) == [*backbones.ROLES, "captioner"]


def test_unknown_role_raises():
    with pytest.raises(ValueError, match=r"role: expected one of \['clip', 'vae', .*'captioner'\], got 'sd'"):
        full_tier.load("sd", pretrained=False)


def test_registry_pins_the_published_torchvision_weights():
    from torchvision.models import ViT_B_16_Weights, get_weight
    from torchvision.models.optical_flow import Raft_Large_Weights

    registry = full_tier.load_registry()
    assert get_weight(registry.raft.weights) is Raft_Large_Weights.DEFAULT
    assert get_weight(registry.frame_classifier.weights) is ViT_B_16_Weights.IMAGENET1K_V1
    # The open_clip tag resolves to the Hub repo the registry names (the file the offline error points to).
    tag = open_clip.get_pretrained_cfg(registry.clip.arch, registry.clip.pretrained_tag)
    assert tag["hf_hub"].rstrip("/") == registry.clip.hub_repo
    assert tag["quick_gelu"] is registry.clip.quick_gelu is True


def test_registry_rejects_unknown_keys(tmp_path):
    text = full_tier.REGISTRY_PATH.read_text().replace("  num_flow_updates: 12", "  num_flow_updates: 12\n  iters: 3")
    (tmp_path / "full.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['iters'\] for RaftSource"):
        full_tier.load_registry(tmp_path / "full.yaml")


def test_missing_architecture_file_raises():
    with pytest.raises(FileNotFoundError, match=r"sd21_unet.json does not exist; expected one of \[.*sd15_unet.json"):
        full_tier.read_architecture("sd21_unet.json")


# ------------------------------------------------------------------------------------------------- preprocessing


def test_frame_preprocessing_matches_the_weights_transforms():
    from torchvision.models import ViT_B_16_Weights

    frames = np.random.default_rng(1).integers(0, 256, size=(3, 300, 451, 3), dtype=np.uint8)
    src = full_tier.load_registry().frame_classifier
    ours = full_tier.preprocess_frames(frames, src.resize_size, src.crop_size, src.mean, src.std)
    reference = ViT_B_16_Weights.IMAGENET1K_V1.transforms()(backbones.to_tensor(frames))
    assert ours.shape == (3, 3, 224, 224)
    torch.testing.assert_close(ours, reference)


def test_sample_frame_indices():
    np.testing.assert_array_equal(full_tier.sample_frame_indices(16, 16), np.arange(16))
    np.testing.assert_array_equal(full_tier.sample_frame_indices(8, 16), np.repeat(np.arange(8), 2))
    np.testing.assert_array_equal(full_tier.sample_frame_indices(61, 16), np.arange(0, 61, 4))


def test_video_classifier_rejects_frames_without_a_video_axis():
    with pytest.raises(ValueError, match=r"expected a uint8 array of shape \(n_videos, n_frames, height, width, 3\)"):
        full_tier._check_videos(FRAMES)


def test_fallback_tokenizer_is_clip_bpe_padded_with_end_of_text():
    captions = ["A red ball rolls left!", "a dog " * 60]
    ids = full_tier._OpenClipBpeTokenizer(77)(captions)
    reference = open_clip.get_tokenizer("ViT-B-32")(captions)  # same BPE, zero-padded
    eot = 49407
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    for row, ref in zip(ids, reference, strict=True):
        end = int((ref == eot).nonzero()[0, 0])
        assert torch.equal(row[: end + 1], ref[: end + 1])
        assert (row[end:] == eot).all()
    assert ids[1, -1] == eot  # truncated to 77 tokens, ending in <|endoftext|>


# ------------------------------------------------------------------------------------------------- random weights


def test_raft_random():
    from torchvision.models.optical_flow import Raft_Large_Weights

    flow_estimator = full_tier.load("raft", pretrained=False)
    assert flow_estimator.name == "full:raft_large/random"
    assert flow_estimator.num_flow_updates == 12
    assert n_parameters(flow_estimator.model) == Raft_Large_Weights.DEFAULT.meta["num_params"] == 5_257_536
    flow_estimator.num_flow_updates = 4  # the wiring, not the refinement, is under test; 12 take ~5 s on 2 cores
    flow = flow_estimator(FRAMES, FRAMES[::-1].copy())  # 32 x 32: resized up to 128 x 128, flow rescaled back
    assert flow.shape == (2, 32, 32, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()


def test_vae_random():
    vae = full_tier.load_vae(pretrained=False)
    assert vae.name == "full:sd15-vae/random"
    assert vae.image_size == 512 and vae.scaling_factor == 0.18215
    # Published as 83.65 M (diffusers' AutoencoderKL of SD 1.x); tolerance = the rounding of the quoted figure.
    assert abs(n_parameters(vae.model) - 83.65e6) <= 0.005e6
    vae.image_size = 64  # 512 px is heavy on CPU; the /8 downsampling is what is checked
    latents = vae.encode(FRAMES)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == np.float32
    decoded = vae.decode(latents)
    assert decoded.shape == (2, 64, 64, 3) and decoded.dtype == np.uint8


def test_captioner_random():
    captioner = full_tier.load_captioner(pretrained=False)
    assert captioner.name == "full:blip2-tiny/random" and captioner.processor is None
    assert n_parameters(captioner.model) < 1e6  # the tiny stand-in, never the 3.8 B-parameter model
    captions = captioner(FRAMES)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert all(re.fullmatch(r"(<\d+> ?)*", c) for c in captions)


@pytest.mark.slow
def test_clip_random():
    encoder = full_tier.load_clip(pretrained=False)
    assert encoder.name == "full:ViT-B-32/random"
    assert (encoder.image_size, encoder.embed_dim) == (224, 512)
    # OpenAI's CLIP ViT-B/32 has 151.28 M parameters (open_clip's count for the architecture: 151,277,313).
    assert n_parameters(encoder.model) == 151_277_313
    assert isinstance(encoder.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    images = encoder.encode_image(FRAMES)
    texts = encoder.encode_text(["a red ball", "a dog"])
    for embeddings in (images, texts):
        assert embeddings.shape == (2, 512) and embeddings.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    del encoder


@pytest.mark.slow
def test_renderer_random():
    renderer = full_tier.load_renderer(pretrained=False)
    assert renderer.name == "full:sd15-unet/random"
    unet, text_encoder = renderer.unet, renderer.condition.text_encoder
    # Published: UNet 859.52 M, text encoder (CLIP ViT-L/14 text tower) 123.06 M; tolerance = rounding.
    assert abs(n_parameters(unet) - 859.52e6) <= 0.005e6
    assert abs(n_parameters(text_encoder) - 123.06e6) <= 0.005e6
    assert unet.config.cross_attention_dim == 768 and unet.config.sample_size == 64
    assert unet.config.in_channels == unet.config.out_channels == 4
    condition = renderer.condition(["a red ball rolls to the left"])
    assert condition.shape == (1, 77, 768) and condition.dtype == np.float32
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise = unet(latents, torch.tensor(500), encoder_hidden_states=torch.from_numpy(condition)).sample
    assert noise.shape == latents.shape and torch.isfinite(noise).all()
    del renderer, unet, text_encoder, noise


@pytest.mark.slow
def test_frame_classifier_random():
    from torchvision.models import ViT_B_16_Weights

    classifier = full_tier.load_frame_classifier(pretrained=False)
    assert classifier.name == "full:vit_b_16/random"
    assert n_parameters(classifier.model) == ViT_B_16_Weights.IMAGENET1K_V1.meta["num_params"] == 86_567_656
    assert len(classifier.labels) == 1000 and classifier.labels[0] == "tench"
    logits = classifier.logits(FRAMES)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    del classifier


@pytest.mark.slow
def test_video_classifier_random():
    classifier = full_tier.load_video_classifier(pretrained=False)
    assert classifier.name == "full:videomae-base/random"
    config = classifier.model.config
    assert (config.num_frames, config.tubelet_size, config.image_size, config.use_mean_pooling) == (16, 2, 224, True)
    # ViT-B/16 over 2 x 16 x 16 tubelets, counted by hand: patch embedding 3*2*16*16*768 + 768; per layer q/k/v
    # 3*768^2 + 2*768 (bias on q and v only), output 768^2 + 768, two LayerNorms 4*768, MLP 2*768*3072 + 3072 + 768;
    # 12 layers; fc_norm 2*768; head 768*400 + 400. VideoMAE's paper rounds it to 87 M.
    d, layers, classes = 768, 12, 400
    per_layer = 3 * d * d + 2 * d + d * d + d + 4 * d + 2 * d * 4 * d + 4 * d + d
    expected = 3 * 2 * 16 * 16 * d + d + layers * per_layer + 2 * d + d * classes + classes
    assert n_parameters(classifier.model) == expected == 86_534_800
    assert len(classifier.labels) == 400 and classifier.labels[0] == "abseiling" and classifier.labels[-1] == "zumba"
    videos = np.random.default_rng(2).integers(0, 256, size=(1, 6, 32, 32, 3), dtype=np.uint8)  # 6 frames → 16
    logits = classifier.logits(videos)
    assert logits.shape == (1, 400) and logits.dtype == np.float32
    del classifier


# ------------------------------------------------------------------------------------------------- ViFi-CLIP (vifi)


class NotATensor:
    """Stands in for the training config some checkpoints pickle beside the weights."""


def test_vifi_without_its_checkpoint_names_the_file_the_variable_and_the_source(monkeypatch, tmp_path):
    monkeypatch.setenv("MINDREEL_VIFI_CHECKPOINT", str(tmp_path / "absent.pth"))
    with pytest.raises(BackboneUnavailableError) as info:
        full_tier.load("vifi")
    message = str(info.value)
    assert message.startswith("vifi: cannot load the full-tier weights ViFi-CLIP ViT-B-16")
    assert f"no file at {tmp_path / 'absent.pth'}" in message and "MINDREEL_VIFI_CHECKPOINT" in message
    assert "muzairkhattak/ViFi-CLIP" in message and message.endswith("or use tier demo.")
    monkeypatch.delenv("MINDREEL_VIFI_CHECKPOINT")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert (
        full_tier.vifi_checkpoint_path()
        == tmp_path / "torch" / "hub" / "mindreel" / "k400_seed1_vifi_clip_base2novel.pth"
    )


def test_vifi_image_state_takes_the_image_encoder_out_of_a_vificlip_checkpoint():
    w = torch.ones(2)
    state = {"module.image_encoder.conv1.weight": w, "image_encoder.ln_post.bias": w, "text_encoder.x": w,
             "prompt_learner.ctx": w}  # fmt: skip
    assert set(full_tier.vifi_image_state({"model": state, "epoch": 3})) == {"conv1.weight", "ln_post.bias"}
    assert set(full_tier.vifi_image_state(state)) == {"conv1.weight", "ln_post.bias"}  # a bare state dict
    with pytest.raises(ValueError, match=r"f.pth: expected ViFi-CLIP weights named 'image_encoder\.\*'.*found none"):
        full_tier.vifi_image_state({"model": {"text_encoder.x": w}}, "f.pth")
    with pytest.raises(ValueError, match=r"f.pth: expected a ViFi-CLIP checkpoint .* got list"):
        full_tier.vifi_image_state([w], "f.pth")


@pytest.mark.slow
def test_vifi_random_and_from_a_checkpoint_in_vificlip_layout(monkeypatch, tmp_path):
    """ViT-B/16 with OpenAI's QuickGELU; a checkpoint saved as ViFi-CLIP saves it (DDP prefix, text and prompt
    weights beside the image tower) loads into the image tower exactly; the frames are resized to 256, centre-cropped
    to 224."""
    encoder = full_tier.load_vifi(pretrained=False)
    assert encoder.name == "full:ViFi-CLIP-ViT-B-16/random"
    assert (encoder.resize_size, encoder.image_size, encoder.embed_dim) == (256, 224, 512)
    assert encoder.model.visual.conv1.kernel_size == (16, 16)
    assert isinstance(encoder.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    generator = torch.Generator().manual_seed(0)
    image = {k: torch.randn(v.shape, generator=generator) for k, v in encoder.model.visual.state_dict().items()}
    model = {f"module.image_encoder.{k}": v.half() for k, v in image.items()}
    model |= {"module.text_encoder.ln_final.weight": torch.ones(512), "module.prompt_learner.ctx": torch.zeros(2)}
    path = tmp_path / "vifi.pth"
    torch.save({"model": model, "epoch": 10}, path)
    monkeypatch.setenv("MINDREEL_VIFI_CHECKPOINT", str(path))
    del encoder
    loaded = full_tier.load("vifi")
    assert loaded.name == "full:ViFi-CLIP-ViT-B-16/k400_seed1_vifi_clip_base2novel"
    for key, value in loaded.model.visual.state_dict().items():
        torch.testing.assert_close(value, image[key].half().float())
    embeddings = loaded.encode_image(FRAMES)
    assert embeddings.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    torch.save({"model": {"image_encoder.conv1.weight": image["conv1.weight"]}}, path)  # a partial tower
    with pytest.raises(ValueError, match=r"vifi.pth: expected the image tower of ViT-B-16 .* missing"):
        full_tier.load("vifi")
    torch.save({"model": model, "config": NotATensor()}, path)
    with pytest.raises(BackboneUnavailableError, match=r"vifi: cannot read .*vifi.pth as tensors only"):
        full_tier.load("vifi")
