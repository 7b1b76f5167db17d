"""The tiny demo-tier backbones (random weights), shared with the feature tests (one definition)."""

from tests.features.conftest import tiny_backbones  # noqa: F401
