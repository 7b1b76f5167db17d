"""The tiny simulated subject as backbone training data (prepared once per session)."""

import pytest

from pipelines.training.backbones.data import load_backbone_data
from tests.features.conftest import tiny_backbones  # noqa: F401  (one definition, shared)


@pytest.fixture(scope="session")
def tiny_data(tiny_twin, tmp_path_factory):
    return load_backbone_data(tiny_twin, cache_dir=tmp_path_factory.mktemp("prepared"))
