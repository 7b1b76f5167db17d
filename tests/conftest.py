"""Shared fixtures: a session-wide cache folder and the `tiny` simulated subject (built once per session)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Caches written by the readers go to a throwaway folder, never to the user's ~/.cache.
os.environ.setdefault("MINDREEL_CACHE", tempfile.mkdtemp(prefix="mindreel-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory) -> Path:
    """The `tiny` preset written once per session (about 10 s): a simulated subject in the CC2017 layout."""
    from pipelines.config import load_config, preset_path
    from pipelines.data.twin.simulate import TwinConfig, simulate

    out = tmp_path_factory.mktemp("tiny_twin")
    return simulate(load_config(TwinConfig, preset_path("twin", "tiny")), out, seed=0, preset="tiny")


def tiny_decoders(n_voxels: int, latent: tuple[int, int, int], n_tokens: int, token_dim: int, n_frames: int,
                  with_flow: bool = True) -> dict:  # fmt: skip
    """Random tiny stage-1 decoders of the given sizes; ``with_flow`` adds the flow decoder (5-TR windows, 8 x 8 grid,
    3 flows, fitted codebook) and the fMRI encoder (3-TR windows)."""
    import torch

    from pipelines.models.brainnrds import FlowDecoder, FlowDecoderConfig
    from pipelines.models.mind_animator import (
        ConsistencyMotionGenerator,
        MotionGeneratorConfig,
        SemanticDecoder,
        SemanticDecoderConfig,
        StructureDecoder,
        StructureDecoderConfig,
    )
    from pipelines.models.neurocine import FMRIEncoder, FMRIEncoderConfig

    decoders = {
        "semantic": SemanticDecoder(
            SemanticDecoderConfig(
                n_voxels=n_voxels, embed_dim=8, n_blocks=1, head_dims=(16,), n_tokens=n_tokens, token_dim=token_dim
            )  # fmt: skip
        ),
        "structure": StructureDecoder(StructureDecoderConfig(n_voxels=n_voxels, hidden_dim=16, latent_shape=latent)),
        "motion": ConsistencyMotionGenerator(
            MotionGeneratorConfig(
                n_voxels=n_voxels,
                latent_shape=latent,
                n_frames=n_frames,
                d_model=16,
                n_heads=2,
                n_layers=1,
                ffn_dim=16,
                fmri_hidden=16,
                n_memory_tokens=1,
            )  # fmt: skip
        ),
    }
    if with_flow:
        decoders["flow"] = FlowDecoder(
            FlowDecoderConfig(
                n_voxels=n_voxels,
                fmri_hidden=16,
                fmri_dim=4,
                grid_size=8,
                image_size=16,
                stem_channels=(4, 8),
                position_channels=2,
                hidden_channels=8,
                n_blocks=1,
                n_flows=3,
                n_clusters=5,
            )  # fmt: skip
        )
        decoders["fmri-encoder"] = FMRIEncoder(
            FMRIEncoderConfig(
                n_voxels=n_voxels,
                window=3,
                patch_size=8,
                d_model=16,
                depth=1,
                n_heads=2,
                mlp_dim=16,
                embed_dim=8,
                n_cond_tokens=n_tokens,
                cond_dim=token_dim,
            )  # fmt: skip
        )
        decoders["flow"].codebook.set_centres(torch.randn(5, 2))
    return decoders


def build_tiny_pipeline(seed: int = 0, conditioning: str = "semantic"):
    """A VideoReconstructionPipeline of random tiny models: 24 voxels, 5-TR windows, 4 frames of 16 x 16 pixels."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pipelines.models.video_unet import inflate_unet
    from pipelines.reconstruct import BundleInfo, ReconstructionConfig, VideoReconstructionPipeline

    torch.manual_seed(seed)
    n_voxels, latent, tokens, width = 24, (4, 4, 4), 6, 16
    decoders = tiny_decoders(n_voxels, latent, tokens, width, n_frames=4)
    unet = UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(4, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    )
    info = BundleInfo(dataset="cc2017", subject="tiny", simulated=True, n_voxels=n_voxels, window=5, centre=2,
                      encoder_window=3, n_frames=4, fps=4.0, image_size=16, flow_stride=1)  # fmt: skip
    rng = np.random.default_rng(seed)
    grayordinates = rng.choice(1000, n_voxels, replace=False).astype(np.int64)
    constants = {
        "voxel_grayordinates": torch.from_numpy(grayordinates),
        "mean_fmri": torch.from_numpy(rng.normal(size=(5, n_voxels)).astype(np.float32)),
        "empty_tokens": torch.randn(tokens, width),
        "mean_latent": torch.randn(*latent),
    }
    config = ReconstructionConfig(num_inference_steps=10, start_timestep=300, conditioning=conditioning)
    return VideoReconstructionPipeline(info, decoders, inflate_unet(unet), vae, constants, config)


@pytest.fixture(scope="module")
def one_thread():
    """Many small ops run faster on one thread than on two contended cores (and leave one core free)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_pipeline():
    """One tiny random pipeline per session (its call is stateless)."""
    return build_tiny_pipeline()


def write_tiny_bundle(directory, n_clips: int = 4, seed: int = 0):
    """A bundle folder of the tiny random pipeline with ``n_clips`` test clips, whose voxels lie in early visual
    cortex (so an ``early_visual`` lesion reaches all of them and other groups none)."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from brainviz.rois import group_masks
    from pipelines.reconstruct import TEST_CLIPS

    pipeline = build_tiny_pipeline(seed)
    rng = np.random.default_rng(seed + 1000)  # not the pipeline's stream: clip 0 would equal its mean fMRI
    n_voxels = pipeline.info.n_voxels
    early = np.flatnonzero(group_masks()["early_visual"])
    grayordinates = np.sort(rng.choice(early, n_voxels, replace=False)).astype(np.int64)
    pipeline.constants["voxel_grayordinates"] = torch.from_numpy(grayordinates)
    pipeline.voxel_grayordinates = grayordinates
    pipeline.save_pretrained(directory)
    fmri = rng.normal(size=(n_clips, pipeline.info.window, n_voxels)).astype(np.float32)
    flow = pipeline(fmri[:1]).flow
    tensors = {
        "fmri": torch.from_numpy(fmri),
        "frames": torch.from_numpy(rng.integers(0, 256, (n_clips, 4, 16, 16, 3), dtype=np.uint8)),
        "text": torch.from_numpy(rng.normal(size=(n_clips, 8)).astype(np.float32)),
        "flows": torch.from_numpy(rng.normal(size=(n_clips, *flow.shape[1:])).astype(np.float32)),
        "category": torch.arange(n_clips) % 3,
        "direction": torch.arange(n_clips) % 2,
    }
    captions = [f"a tiny clip number {i}" for i in range(n_clips)]
    save_file(tensors, str(directory / TEST_CLIPS), metadata={"captions": json.dumps(captions)})
    return directory


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny bundle folder on disk (random weights, 4 test clips, simulated)."""
    return write_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))
