"""The building blocks every learned model and policy may import: ``mlp``, ``EnsembleMLP``, ``Normalizer``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``layers`` hidden SiLU layers of width ``hidden``, then a linear output."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


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


class Normalizer(nn.Module):
    """Standardise features ``[..., D]`` with a saved mean and std (std floored at ``eps``).

    The statistics are buffers, so they travel with the model's checkpoint.

    Example:
        >>> norm = Normalizer(2)
        >>> norm.fit(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        >>> norm.normalize(torch.tensor([[1.0, 1.0]]))
        tensor([[0., 0.]])
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def fitted(self) -> bool:
        return bool(self.count > 0)

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        """Set the statistics from ``data [N, D]`` (all rows, float64 accumulation)."""
        if data.ndim != 2 or data.shape[1] != self.mean.numel():
            raise ValueError(f"Normalizer.fit: data of shape {tuple(data.shape)}; expected [N, {self.mean.numel()}]")
        if not torch.isfinite(data).all():
            raise ValueError("Normalizer.fit: data contains NaN or inf")
        d = data.double()
        self.mean.copy_(d.mean(0))
        self.std.copy_(d.std(0, correction=0).clamp_min(self.eps) if len(d) > 1 else torch.ones_like(self.std))
        self.count.fill_(len(d))

    @torch.no_grad()
    def update(self, data: torch.Tensor, sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Merge ``data [N, D]`` into running statistics (Chan et al.'s parallel update).

        With ``sum_over_ranks`` (e.g. an all-reduce) the moments of every rank's ``data`` are
        merged, so all ranks keep identical statistics.
        """
        d = self.mean.numel()
        data = data.reshape(-1, d).double()
        if not torch.isfinite(data).all():
            raise ValueError("Normalizer.update: data contains NaN or inf")
        moments = torch.cat([data.new_tensor([len(data)]), data.sum(0), (data**2).sum(0)])
        if sum_over_ranks is not None:
            moments = sum_over_ranks(moments)
        n_new = int(moments[0])
        if n_new == 0:
            return
        mean_new = moments[1 : 1 + d] / n_new
        var_new = (moments[1 + d :] / n_new - mean_new**2).clamp_min(0.0)
        n_old = int(self.count)
        total = n_old + n_new
        delta = mean_new - self.mean.double()
        var_old = self.std.double() ** 2 if n_old > 0 else torch.zeros_like(var_new)
        m2 = var_old * n_old + var_new * n_new + delta**2 * n_old * n_new / total
        self.mean.copy_(self.mean.double() + delta * n_new / total)
        self.std.copy_((m2 / total).sqrt().clamp_min(self.eps))
        self.count.fill_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
