"""The tiny simulated subject with random-weight tiny teachers, as decoder training data (built once per session)."""

import pytest
import torch

from pipelines.training.decoders.config import STAGES, load_decoders_config
from pipelines.training.decoders.train import load_data, train_stage
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


@pytest.fixture(scope="session")
def trained(tiny_config, tiny_decoder_data, tmp_path_factory):
    """All five stages trained for a few steps (seeded) into one decoders folder."""
    out = tmp_path_factory.mktemp("decoders")
    for stage in STAGES:
        torch.manual_seed(0)
        train_stage(stage, tiny_config, tiny_decoder_data, out)
    return out


@pytest.fixture(scope="session")
def built_bundle(tiny_twin, tiny_backbones, trained, decoder_cache, tmp_path_factory):  # noqa: F811
    """``build-bundle`` over the trained tiny decoders, with the first 4 test clips (also the CLI's test)."""
    from pipelines import bundle

    out = tmp_path_factory.mktemp("bundle")
    argv = ["--config", "tiny", "--data", str(tiny_twin), "--backbones", str(tiny_backbones[0]), "--cache-dir",
            str(decoder_cache), "--decoders", str(trained), "--out", str(out), "--n-test", "4"]  # fmt: skip
    assert bundle.main(argv) == 0
    return out
