"""`ProbabilisticContextEncoder`: PEARL's permutation-invariant posterior over a task latent."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from modules.blocks import Normalizer, mlp

MIN_VAR = 1e-4


class ProbabilisticContextEncoder(nn.Module):
    """``q(z | C) ∝ Π_i N(z; μ_i, σ_i²)`` with one Gaussian factor ``(μ_i, σ_i²) = Ψ(x_i, y_i)`` per
    context transition (Rakelly et al., 2019): precisions add, ``σ² = 1 / Σ_i σ_i⁻²`` and
    ``μ = σ² Σ_i μ_i σ_i⁻²``. A product is invariant to the order of the context, and it sharpens
    as the context grows. An empty context gives the unit prior ``N(0, I)`` (the meta-test's start).

    The transition is ``x = [s, a]``, ``y = s' − s`` (as for GSSM, so the meta-test's online context
    serves both); both are standardised by running normalisers that are saved with the encoder.

    Shapes: ``context_x [B, N, X]``, ``context_y [B, N, Y]``, ``mask [B, N]`` (True = real) → a
    ``Normal`` with batch shape ``[B, Z]``.

    Example:
        >>> enc = ProbabilisticContextEncoder(x_dim=7, y_dim=6, latent_dim=3, hidden_dim=16)
        >>> q = enc(torch.randn(2, 5, 7), torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
        >>> q.mean.shape, bool((enc.kl_to_prior(q) >= 0).all())
        (torch.Size([2, 3]), True)
    """

    def __init__(self, x_dim: int, y_dim: int, latent_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.x_dim, self.y_dim, self.latent_dim = x_dim, y_dim, latent_dim
        self.x_normalizer, self.y_normalizer = Normalizer(x_dim), Normalizer(y_dim)
        self.factor = mlp(x_dim + y_dim, hidden_dim, 2 * latent_dim, layers=2)

    def forward(self, context_x: torch.Tensor, context_y: torch.Tensor, mask: torch.Tensor) -> Normal:
        if context_x.shape[-1] != self.x_dim or context_y.shape[-1] != self.y_dim or context_x.ndim != 3:
            raise ValueError(
                f"context_x {tuple(context_x.shape)} / context_y {tuple(context_y.shape)}: expected "
                f"[B, N, {self.x_dim}] and [B, N, {self.y_dim}]"
            )
        h = torch.cat([self.x_normalizer.normalize(context_x), self.y_normalizer.normalize(context_y)], dim=-1)
        mu, raw = self.factor(h).chunk(2, dim=-1)
        precision = mask.unsqueeze(-1).to(mu.dtype) / (F.softplus(raw) + MIN_VAR)  # padding adds nothing
        total = precision.sum(1)  # [B, Z]
        empty = total == 0
        var = 1.0 / torch.where(empty, torch.ones_like(total), total)
        mean = torch.where(empty, torch.zeros_like(total), var * (precision * mu).sum(1))
        return Normal(mean, var.sqrt(), validate_args=False)

    @staticmethod
    def kl_to_prior(q: Normal) -> torch.Tensor:
        """``KL[q(z | C) ‖ N(0, I)]`` per context ``[B]`` (PEARL's information bottleneck)."""
        return kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))).sum(-1)
