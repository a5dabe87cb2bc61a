"""`Normalizer`: eps-safe per-feature standardisation whose statistics live in ``state_dict``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
