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
