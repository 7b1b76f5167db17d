"""The decoder tests run many small ops: one thread is faster than two contended cores (and leaves one free)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs on one thread (tests/conftest.py ``one_thread``)."""
    yield
