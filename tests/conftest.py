"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
from countdown import CountdownFamily

import envs


@pytest.fixture
def family(monkeypatch) -> CountdownFamily:
    """The countdown family, registered under its name for the code that looks families up."""
    monkeypatch.setitem(envs.FAMILIES, "countdown", CountdownFamily)
    return CountdownFamily()
