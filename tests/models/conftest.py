"""Fixtures for the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see the root conftest)."""
