"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch
from countdown import CountdownFamily

import envs

# The in-process tests run small tensors, where a second intra-op thread costs more in handoffs than it
# gains; subprocesses keep torch's default.
torch.set_num_threads(1)


@pytest.fixture
def family(monkeypatch) -> CountdownFamily:
    """The countdown family, registered under its name for the code that looks families up."""
    monkeypatch.setitem(envs.FAMILIES, "countdown", CountdownFamily)
    return CountdownFamily()
