"""The demo bundle shipped in assets/demo: what `python app.py` opens on a fresh clone."""

from __future__ import annotations

import json

import numpy as np
import pytest

import app
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips

DEMO = app.DEFAULT_BUNDLE
MAX_BYTES = 60 * 10**6  # the shipped bundle's budget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest():
    path = DEMO / "bundle.json"
    assert path.is_file(), f"{path} is missing: the repository ships the demo bundle there"
    return json.loads(path.read_text())


def test_the_demo_bundle_is_small_simulated_and_says_how_it_was_made(manifest):
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < MAX_BYTES, f"assets/demo is {size / 1e6:.1f} MB; expected under {MAX_BYTES / 1e6:.0f} MB"
    assert manifest["info"]["simulated"] is True  # it must be labelled as simulated wherever it is shown
    assert manifest["weights_dtype"] == "float16"
    commands = [c["command"] for c in manifest["provenance"]["commands"]]
    assert commands[0].startswith("python -m pipelines build-bundle ")
    assert all(len(c["git_revision"] or "") == 40 for c in manifest["provenance"]["commands"])
    assert manifest["tuning"]["split"] == "val"  # settings chosen on validation clips, never test


def test_the_demo_bundle_opens_and_reconstructs_a_clip(manifest):
    pipeline = VideoReconstructionPipeline.from_pretrained(DEMO)
    clips = load_bundle_clips(DEMO)
    assert len(clips) >= 20 and clips.fmri.shape[1:] == (pipeline.info.window, pipeline.info.n_voxels)
    out = pipeline(clips.fmri[:1])
    size = pipeline.info.image_size
    assert out.frames.shape == (1, pipeline.info.n_frames, size, size, 3)
    assert out.frames.std() > 5 and np.isfinite(out.flow).all()  # a video, not a blank
