"""VideoReconstructionPipeline on tiny random models: shapes, determinism, ablations, lesions, bundles, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.reconstruct import (
    ABLATIONS,
    TEST_CLIPS,
    VideoReconstructionPipeline,
    check_ablate,
    lesion_voxels,
    load_bundle_clips,
)
from tests.conftest import build_tiny_pipeline, tiny_decoders

STEPS = ("check", "semantic", "structure", "motion", "flow", "render", "decode")


@pytest.fixture(scope="module")
def fmri():
    return np.random.default_rng(0).normal(size=(2, 5, 24)).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_outputs_have_the_documented_shapes(tiny_pipeline, fmri):
    out = tiny_pipeline(fmri)
    assert out.frames.shape == (2, 4, 16, 16, 3) and out.frames.dtype == np.uint8
    assert out.semantic_embedding.shape == (2, 8)
    assert out.semantic_tokens.shape == (2, 6, 16)
    assert out.structure_latent.shape == (2, 4, 4, 4)
    assert out.motion_latents.shape == (2, 4, 4, 4, 4)
    assert out.flow.shape == (2, 3, 2, 8, 8)
    assert tuple(out.timings) == STEPS and all(v >= 0 for v in out.timings.values())
    assert out.ablated == () and out.lesioned_voxels == 0


def test_one_window_without_a_batch_axis_is_one_clip(tiny_pipeline, fmri):
    np.testing.assert_array_equal(tiny_pipeline(fmri[0]).frames, tiny_pipeline(fmri[:1]).frames)


def test_the_same_seed_gives_the_same_frames_and_another_seed_others(tiny_pipeline, fmri):
    a, b = tiny_pipeline(fmri, seed=3), tiny_pipeline(fmri, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, tiny_pipeline(fmri, seed=4).frames)


def test_clips_do_not_depend_on_their_batch_neighbours(tiny_pipeline, fmri):
    # the noise is drawn for the whole batch, so compare the semantic and structure features, which are per clip
    both, alone = tiny_pipeline(fmri), tiny_pipeline(fmri[1:])
    np.testing.assert_allclose(both.semantic_tokens[1], alone.semantic_tokens[0], atol=1e-5)
    np.testing.assert_allclose(both.structure_latent[1], alone.structure_latent[0], atol=1e-5)


def test_semantic_off_conditions_on_the_empty_caption(tiny_pipeline, fmri):
    out = tiny_pipeline(fmri, ablate=["semantic"])
    empty = tiny_pipeline.constants["empty_tokens"].numpy()
    np.testing.assert_allclose(out.semantic_tokens, np.broadcast_to(empty, out.semantic_tokens.shape))
    assert out.semantic_embedding is None and out.ablated == ("semantic",)


def test_structure_off_starts_from_the_mean_training_latent(tiny_pipeline, fmri):
    out = tiny_pipeline(fmri, ablate="structure")
    mean = tiny_pipeline.constants["mean_latent"].numpy()
    np.testing.assert_allclose(out.structure_latent, np.broadcast_to(mean, out.structure_latent.shape))


def test_motion_and_flow_off_repeat_the_first_frame(tiny_pipeline, fmri):
    out = tiny_pipeline(fmri, ablate=["motion", "flow"])
    layout = out.motion_latents
    np.testing.assert_allclose(layout, np.repeat(out.structure_latent[:, :, None], 4, axis=2))


def test_the_layout_starts_at_the_first_frame_and_flow_changes_it(tiny_pipeline, fmri):
    on, off = tiny_pipeline(fmri), tiny_pipeline(fmri, ablate="flow")
    np.testing.assert_allclose(on.motion_latents[:, :, 0], on.structure_latent, atol=1e-6)
    assert not np.allclose(on.motion_latents[:, :, 1:], off.motion_latents[:, :, 1:])
    np.testing.assert_allclose(on.flow, off.flow)  # the flow is still decoded (the app shows it)


def test_flow_guidance_moves_the_decoded_image_or_the_latent(tiny_pipeline, fmri):
    import dataclasses

    import torch

    from pipelines.models.sampling import animate

    base, info = tiny_pipeline.config, tiny_pipeline.info
    try:
        tiny_pipeline.config = dataclasses.replace(base, flow_weight=1.0, flow_space="pixel")
        pixel = tiny_pipeline(fmri)
        tiny_pipeline.config = dataclasses.replace(base, flow_weight=1.0, flow_space="latent")
        latent = tiny_pipeline(fmri)
        tiny_pipeline.config = dataclasses.replace(base, flow_weight=0.0)
        zero = tiny_pipeline(fmri)
    finally:
        tiny_pipeline.config = base
    first, flow = torch.from_numpy(pixel.structure_latent), torch.from_numpy(pixel.flow)
    with torch.no_grad():
        image = tiny_pipeline.decode_latents(first)
        expected = tiny_pipeline.encode_images(animate(image, flow, info.n_frames, info.flow_stride))
    assert expected.shape == pixel.motion_latents.shape
    np.testing.assert_allclose(pixel.motion_latents[:, :, 1:], expected[:, :, 1:].numpy(), atol=1e-5)
    np.testing.assert_allclose(latent.motion_latents[:, :, 1:], animate(first, flow, 4, info.flow_stride)[:, :, 1:])
    assert not np.allclose(pixel.motion_latents, latent.motion_latents)
    np.testing.assert_array_equal(zero.frames, tiny_pipeline(fmri, ablate="flow").frames)  # weight 0 = guidance off


def test_every_ablation_changes_the_frames(tiny_pipeline, fmri):
    full = tiny_pipeline(fmri).frames
    for name in ABLATIONS:
        assert not np.array_equal(tiny_pipeline(fmri, ablate=name).frames, full), name


def test_a_lesion_equals_setting_those_voxels_to_their_training_mean(tiny_pipeline, fmri):
    grayordinates = tiny_pipeline.voxel_grayordinates
    lesion = [int(grayordinates[3]), int(grayordinates[10]), 90000]  # the last is not a selected voxel
    out = tiny_pipeline(fmri, lesion=lesion)
    assert out.lesioned_voxels == 2
    edited = fmri.copy()
    mean = tiny_pipeline.constants["mean_fmri"].numpy()
    edited[:, :, [3, 10]] = mean[:, [3, 10]]
    np.testing.assert_array_equal(out.frames, tiny_pipeline(edited).frames)
    np.testing.assert_allclose(out.semantic_tokens, tiny_pipeline(edited).semantic_tokens)


def test_a_lesion_outside_the_selected_voxels_changes_nothing(tiny_pipeline, fmri):
    out = tiny_pipeline(fmri, lesion=np.array([90000, 90001]))
    assert out.lesioned_voxels == 0
    np.testing.assert_array_equal(out.frames, tiny_pipeline(fmri).frames)


def test_lesion_voxels_maps_grayordinates_to_voxels():
    np.testing.assert_array_equal(lesion_voxels(np.array([5, 7, 9]), [9, 5]), [0, 2])
    assert lesion_voxels(np.array([5]), None).size == 0


@pytest.mark.parametrize("lesion", [[-1], [91282], [1.5]])
def test_lesion_errors(lesion):
    with pytest.raises(ValueError, match=r"lesion: expected grayordinate indices in \[0, 91282\)"):
        lesion_voxels(np.array([1, 2]), np.asarray(lesion))


def test_check_ablate():
    assert check_ablate(None) == () and check_ablate("motion") == ("motion",)
    assert check_ablate(["structure", "motion", "motion"]) == ("motion", "structure")
    with pytest.raises(ValueError, match=r"ablate: expected names from .* unknown \['colour'\]"):
        check_ablate(["colour"])


def test_mean_fmri_negative_and_inversion_and_encoder_conditioning_run(fmri):
    pipeline = build_tiny_pipeline()
    base = pipeline(fmri).frames
    pipeline.config = replace(pipeline.config, negative="mean-fmri")
    assert not np.array_equal(pipeline(fmri).frames, base)
    pipeline.config = replace(pipeline.config, negative="empty", start="invert")
    inverted = pipeline(fmri)
    np.testing.assert_array_equal(inverted.frames, pipeline(fmri, ablate="dependent_noise").frames)  # no noise drawn
    encoder = build_tiny_pipeline(conditioning="fmri-encoder")
    out = encoder(fmri)
    assert out.semantic_tokens.shape == (2, 6, 16)
    assert not np.allclose(out.semantic_tokens, pipeline(fmri).semantic_tokens)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            np.zeros((2, 4, 24), np.float32),
            r"fmri: expected an array of shape \(n_clips, 5, 24\).*got shape \(2, 4, 24\)",
        ),
        (np.zeros((2, 5, 23), np.float32), r"got shape \(2, 5, 23\)"),
        (np.full((1, 5, 24), np.nan, np.float32), "finite"),
    ],
)
def test_bad_fmri_is_refused(tiny_pipeline, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_pipeline(bad)


def test_constructor_errors(tiny_pipeline):
    p = tiny_pipeline
    with pytest.raises(ValueError, match=r"decoders: expected .* missing \['motion'\]"):
        VideoReconstructionPipeline(p.info, {k: v for k, v in p.decoders.items() if k != "motion"}, p.renderer, p.vae,
                                    p.constants)  # fmt: skip
    with pytest.raises(ValueError, match=r"constants: expected .* missing \['mean_latent'\]"):
        constants = {k: v for k, v in p.constants.items() if k != "mean_latent"}
        VideoReconstructionPipeline(p.info, p.decoders, p.renderer, p.vae, constants)
    with pytest.raises(ValueError, match="no fmri-encoder decoder"):
        decoders = {k: v for k, v in p.decoders.items() if k != "fmri-encoder"}
        VideoReconstructionPipeline(p.info, decoders, p.renderer, p.vae, p.constants,
                                    replace(p.config, conditioning="fmri-encoder"))  # fmt: skip
    with pytest.raises(ValueError, match="num_inference_steps"):
        p(np.zeros((1, 5, 24), np.float32), num_inference_steps=0)


def test_a_bundle_round_trip_reproduces_the_frames(tiny_pipeline, fmri, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    assert {"bundle.json", "constants.safetensors", "decoders", "renderer", "vae"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = VideoReconstructionPipeline.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded(fmri).frames, tiny_pipeline(fmri).frames)
    assert loaded.info == tiny_pipeline.info and loaded.config == tiny_pipeline.config
    faster = VideoReconstructionPipeline.from_pretrained(tmp_path, num_inference_steps=5)
    assert faster.config.num_inference_steps == 5


def test_a_half_precision_bundle_is_half_the_size_and_computes_in_float32(tiny_pipeline, fmri, tmp_path):
    from safetensors import safe_open

    full, half = tmp_path / "full", tmp_path / "half"
    tiny_pipeline.save_pretrained(full)
    tiny_pipeline.save_pretrained(half, weights_dtype="float16")

    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.name != "constants.safetensors")

    assert 0.45 < size(half) / size(full) < 0.6  # headers and integer buffers do not halve
    with safe_open(str(half / "decoders" / "semantic" / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    loaded = VideoReconstructionPipeline.from_pretrained(half)
    assert json.loads((half / "bundle.json").read_text())["weights_dtype"] == "float16"
    modules = [*loaded.decoders.values(), loaded.renderer, loaded.vae]
    assert {p.dtype for m in modules for p in m.parameters()} == {torch.float32}
    # the weights are the float32 ones rounded to half precision, nothing else
    for name, module in loaded.decoders.items():
        for (key, p), q in zip(
            module.state_dict().items(), tiny_pipeline.decoders[name].state_dict().values(), strict=True
        ):
            expected = q.half().to(q.dtype) if q.is_floating_point() else q
            torch.testing.assert_close(p, expected, rtol=0, atol=0, msg=f"{name}.{key}")
    out, ref = loaded(fmri), tiny_pipeline(fmri)
    assert np.abs(out.frames.astype(int) - ref.frames).mean() < 3  # same video up to half-precision rounding
    with pytest.raises(ValueError, match=r"weights_dtype: expected one of \['float32', 'float16'\], got 'int8'"):
        tiny_pipeline.save_pretrained(tmp_path / "bad", weights_dtype="int8")


def test_from_pretrained_errors(tiny_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle.json does not exist"):
        VideoReconstructionPipeline.from_pretrained(tmp_path)
    tiny_pipeline.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"overrides: expected ReconstructionConfig fields, got unknown \['colour'\]"):
        VideoReconstructionPipeline.from_pretrained(tmp_path, colour=1)
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    (tmp_path / "bundle.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ValueError, match="expected bundle format 1, got 99"):
        VideoReconstructionPipeline.from_pretrained(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps(manifest))
    (tmp_path / "constants.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="constants.safetensors does not exist"):
        VideoReconstructionPipeline.from_pretrained(tmp_path)


def test_bundle_clips_round_trip(tmp_path):
    fmri = np.zeros((2, 5, 24), np.float32)
    frames = np.arange(2 * 4 * 16 * 16 * 3, dtype=np.int64).astype(np.uint8).reshape(2, 4, 16, 16, 3)
    with pytest.raises(FileNotFoundError, match="test_clips.safetensors does not exist"):
        load_bundle_clips(tmp_path)
    tensors = {"fmri": torch.from_numpy(fmri), "frames": torch.from_numpy(frames), "category": torch.tensor([1, 2])}
    save_file(tensors, tmp_path / TEST_CLIPS, metadata={"captions": json.dumps(["a", "b"])})
    clips = load_bundle_clips(tmp_path)
    assert len(clips) == 2 and clips.captions == ["a", "b"] and clips.direction is None
    np.testing.assert_array_equal(clips.frames, frames)
    np.testing.assert_array_equal(clips.category, [1, 2])


@pytest.mark.slow
def test_the_full_tier_architecture_goes_through_the_same_pipeline():
    """SD 1.5's UNet and VAE built from their configs (random weights, no download), one DDIM step at 64 px."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pipelines.features.full_tier import read_architecture
    from pipelines.models.video_unet import inflate_unet
    from pipelines.reconstruct import BundleInfo, ReconstructionConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_architecture("sd15_unet.json"))
    vae = AutoencoderKL.from_config(read_architecture("sd15_vae.json"))
    assert unet.config.cross_attention_dim == 768 and vae.config.latent_channels == 4
    n_voxels, latent, tokens = 16, (4, 8, 8), 20  # Mind-Animator: [cls; 19 decoded tokens] of width 768
    decoders = tiny_decoders(n_voxels, latent, tokens, 768, n_frames=2, with_flow=False)
    info = BundleInfo(dataset="cc2017", subject="random", simulated=True, n_voxels=n_voxels, window=1, centre=0,
                      encoder_window=1, n_frames=2, fps=4.0, image_size=64, flow_stride=1)  # fmt: skip
    constants = {
        "voxel_grayordinates": torch.arange(n_voxels),
        "mean_fmri": torch.zeros(1, n_voxels),
        "empty_tokens": torch.randn(tokens, 768),
        "mean_latent": torch.zeros(*latent),
    }
    config = ReconstructionConfig(num_inference_steps=1, guidance_scale=12.5)
    pipeline = VideoReconstructionPipeline(info, decoders, inflate_unet(unet), vae, constants, config)
    del unet
    out = pipeline(np.random.default_rng(0).normal(size=(1, 1, n_voxels)).astype(np.float32))
    assert out.frames.shape == (1, 2, 64, 64, 3) and out.flow is None


def test_starting_from_noise_ignores_the_layout(fmri):
    """The joint (non-decoupled) baseline: the whole schedule from noise, so structure, motion and flow do not matter."""
    pipeline = build_tiny_pipeline()
    pipeline.config = replace(pipeline.config, start="noise", num_inference_steps=4)
    full = pipeline(fmri)
    np.testing.assert_array_equal(full.frames, pipeline(fmri, ablate=["structure", "motion", "flow"]).frames)
    assert not np.array_equal(full.frames, pipeline(fmri, ablate="semantic").frames)
