"""Trained tiny decoders on the tiny simulated subject, shared with the decoder tests (one definition)."""

from tests.training.decoders.conftest import (  # noqa: F401
    decoder_cache,
    tiny_backbones,
    tiny_config,
    tiny_decoder_data,
    trained,
)
