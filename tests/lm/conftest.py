"""Fixtures of the language-model tests."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every language-model test runs with one torch thread (tests/conftest.py)."""
    yield
