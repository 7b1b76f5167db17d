"""Shared by the evaluation tests: the tiny demo-tier backbones (random weights, one definition with the feature
tests), a tiny bundle with synthetic test clips, and Mind-Animator's protocol at the tiny clips' size."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from pipelines.config import to_dict
from pipelines.evaluation.protocols import load_protocol
from pipelines.reconstruct import TEST_CLIPS
from tests.conftest import build_tiny_pipeline
from tests.features.conftest import tiny_backbones  # noqa: F401
from tests.training.decoders.conftest import (  # noqa: F401  (the tiny trained bundle, for the ridge baseline)
    built_bundle,
    decoder_cache,
    tiny_config,
    tiny_decoder_data,
    trained,
)


@pytest.fixture(scope="package")
def tiny_bundle(tmp_path_factory):
    """The tiny pipeline (4 frames of 16 px at 4 fps, 3 classes) with 4 random test clips."""
    root = tmp_path_factory.mktemp("tiny-bundle")
    pipeline = build_tiny_pipeline()
    pipeline.config = dataclasses.replace(pipeline.config, num_inference_steps=4)
    pipeline.save_pretrained(root)
    rng = np.random.default_rng(0)
    tensors = {
        "fmri": torch.from_numpy(rng.normal(size=(4, 5, 24)).astype(np.float32)),
        "frames": torch.from_numpy(rng.integers(0, 256, (4, 4, 16, 16, 3), dtype=np.uint8)),
        "category": torch.tensor([0, 1, 2, 0]),
        "direction": torch.tensor([0, 1, 0, 1]),
    }
    probe = pipeline(tensors["fmri"][:1].numpy())
    tensors["text"] = torch.from_numpy(rng.normal(size=(4, probe.semantic_embedding.shape[1])).astype(np.float32))
    tensors["flows"] = torch.from_numpy(rng.normal(size=(4, *probe.flow.shape[1:])).astype(np.float32))
    save_file(tensors, root / TEST_CLIPS, metadata={"captions": json.dumps(["a ball", "a car", "a star", "a ball"])})
    return root


@pytest.fixture(scope="package")
def small_protocol(tmp_path_factory):
    """Mind-Animator's protocol at the tiny clips' length and size (4 frames at 4 fps, 32 px)."""
    protocol = dataclasses.replace(load_protocol("mind-animator"), n_frames=4, resolution=32, n_way_trials=10)
    path = tmp_path_factory.mktemp("protocol") / "small.yaml"
    path.write_text(yaml.safe_dump(to_dict(protocol)))
    return path
