"""The tiny simulated subject with random-weight tiny teachers, as decoder training data (built once per session)."""

import pytest

from pipelines.training.decoders.config import load_decoders_config
from pipelines.training.decoders.train import load_data
from tests.features.conftest import tiny_backbones  # noqa: F401  (one definition, shared)


@pytest.fixture(scope="session")
def tiny_config():
    return load_decoders_config("tiny")


@pytest.fixture(scope="session")
def decoder_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("decoder-cache")


@pytest.fixture(scope="session")
def tiny_decoder_data(tiny_twin, tiny_backbones, tiny_config, decoder_cache):  # noqa: F811
    return load_data(tiny_config, tiny_twin, tiny_backbones[0], cache_dir=decoder_cache)
