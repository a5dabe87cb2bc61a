"""The global generators' state, saved in a checkpoint and restored on resume so that a resumed run
draws what the uninterrupted one would have."""

from __future__ import annotations

import torch


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The global torch (CPU) and CUDA generator states."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def restore_rng_state(torch_rng: torch.Tensor, cuda_rng: list[torch.Tensor]) -> None:
    """Set the global torch (CPU) and, where present, CUDA generator states of :func:`rng_state`."""
    torch.set_rng_state(torch_rng)
    if cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
