"""Fixtures every test shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Machines here are shared and noisy: a slow example is not a failure (no timing in tests).
settings.register_profile("regward", deadline=None, print_blob=True)
settings.load_profile("regward")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test inherits the caller's proxy or Docker settings."""
    for name in list(os.environ):
        if name.upper().endswith("_PROXY") or name.startswith("DOCKER_"):
            monkeypatch.delenv(name)
    yield
