"""Fixtures of the manage tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_nebula_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """manage reads NEBULA_*; a CI's own values must not redirect these tests."""
    for key in list(os.environ):
        if key.startswith("NEBULA_"):
            monkeypatch.delenv(key)
