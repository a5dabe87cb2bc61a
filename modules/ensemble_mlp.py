"""`EnsembleMLP`: ``K`` independent MLPs evaluated as one batched matmul per layer."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleMLP(nn.Module):
    """``K`` MLPs of the same shape (``layers`` hidden SiLU layers, linear output), independently
    initialised like ``nn.Linear``; the members differ only by their initialisation, which is what
    makes their disagreement grow away from the training data (PETS / MBPO ensembles).

    Shapes: input ``[..., in_dim]`` (shared by every member) → output ``[K, ..., out_dim]``.

    Example:
        >>> net = EnsembleMLP(3, in_dim=4, hidden=8, out_dim=2)
        >>> net(torch.randn(5, 7, 4)).shape
        torch.Size([3, 5, 7, 2])
    """

    def __init__(self, members: int, in_dim: int, hidden: int, out_dim: int, layers: int = 2):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least 1 member, got {members}")
        self.members = members
        dims = [in_dim] + [hidden] * layers + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.each(x.reshape(1, -1, x.shape[-1]).expand(self.members, -1, -1))
        return h.reshape(self.members, *lead, h.shape[-1])

    def each(self, x: torch.Tensor) -> torch.Tensor:
        """Member ``k`` on its own rows ``x[k]``: ``[K, N, in_dim]`` → ``[K, N, out_dim]`` (particles that
        each keep one member through a rollout, PETS's TS∞)."""
        if x.ndim != 3 or x.shape[0] != self.members:
            raise ValueError(f"EnsembleMLP.each: input of shape {tuple(x.shape)}; expected [{self.members}, N, D]")
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.silu(x)
        return x
