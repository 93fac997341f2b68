"""Fixtures every test shares."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.harness.browser import close_chromium

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


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs a command (which calls `regward.logs.configure`) leaves the root logger
    as it found it: a handler left on a captured stream that is closed by then makes every
    later log line a "--- Logging error ---" on stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True, scope="module")
def _chromium_per_module() -> Iterator[None]:
    """Browser sessions of one module share a Chromium (tests/harness/browser.py); it stops
    when the module ends, before any other module's test runs."""
    yield
    close_chromium()
