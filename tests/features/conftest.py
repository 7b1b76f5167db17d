"""A tiny demo-tier architecture, saved once per session with random weights."""

import dataclasses

import pytest
import torch

from pipelines.config import load_config, preset_path
from pipelines.features import demo_tier as d
from pipelines.models.classifier import FrameClassifier

# The `tiny` architecture preset, with three class names for the frame classifier built here.
_PRESET = load_config(d.DemoBackbonesConfig, preset_path("backbones", "tiny"))
TINY = dataclasses.replace(
    _PRESET, frame_classifier=dataclasses.replace(_PRESET.frame_classifier, labels=("ball", "car", "star"))
)


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory):
    """(folder, modules): every demo-tier role saved with random weights."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("backbones")
    modules = {
        "clip": d.build_clip(TINY.clip).eval(),
        "vae": d.build_vae(TINY.vae).eval(),
        "unet": d.build_unet(TINY).eval(),
        "raft": d.build_raft().eval(),
        "frame_classifier": FrameClassifier(TINY.frame_classifier).eval(),
    }
    d.save_clip(modules["clip"], TINY.clip, root / "clip", {"steps": 0})
    d.save_diffusers(modules["vae"], root / "vae", "vae")
    d.save_diffusers(modules["unet"], root / "unet", "unet")
    d.save_raft(modules["raft"], TINY.raft, root / "raft")
    modules["frame_classifier"].save_pretrained(root / "frame_classifier")
    return root, modules
