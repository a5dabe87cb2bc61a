"""`MetaDynamicsNet`: GSSM and its MLSM ablations as one flag-driven network (DESIGN §2).

Variants (``variant=``):

* ``"gssm"``: node embedding ``h_i = MLP([x_i, y_i])``; ``L`` rounds of attention message
  passing over the context graph; ``q(z_c | C)`` from the masked mean of node states;
  context→target message ``v_t = Σ_i β_ti W h_i`` with ``β`` keyed on ``x_t`` vs ``x_i``;
  target latent ``q(z_t | x_t, C) = N(z_c + Δμ, σ)`` with ``(Δμ, σ) = MLP([z_c, v_t, x_t])``
  (a residual around ``z_c``: with a plain ``μ = MLP(·)`` the KL to ``q(z_c)`` holds GSSM in
  the uninformative solution for hundreds of steps on the toy test); decoder ``p(y_t | x_t, z_t)``.
  The model builds ``q(z_t)`` around the *mean* of ``q(z_c)`` (DESIGN §2.8), see
  :mod:`modules.models.meta_dynamics_model`.
* ``"mlsm_v0"``: neural process, ``q(z | C)`` from the mean of ``h_i`` (no message passing,
  no ``z_t``), decoder ``p(y_t | x_t, z)``.
* ``"mlsm_v1"``: ``mlsm_v0`` plus the deterministic context→target attention path,
  decoder ``p(y_t | x_t, z, v_t)`` (attentive NP).

All inputs are normalised ``x = [s, a]`` and ``y = Δs``. The decoder is an ensemble of
``ensemble_size`` independently initialised heads (:class:`modules.blocks.EnsembleMLP`) on the
shared encoder; their disagreement estimates the model's own error (DESIGN §3). Its log-variance is
soft-clamped between learned bounds shared by the heads (PETS / mbrl-lib).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from common.sampling import sample_normal
from modules.blocks import EnsembleMLP, mlp
from modules.models.attention import MaskedAttention, MessagePassingBlock, scatter_nodes

Variant = Literal["gssm", "mlsm_v0", "mlsm_v1"]
VARIANTS: tuple[str, ...] = ("gssm", "mlsm_v0", "mlsm_v1")
MIN_STD = 1e-4


def _gaussian(params: torch.Tensor) -> Normal:
    mean, raw_std = params.chunk(2, dim=-1)
    return Normal(mean, F.softplus(raw_std) + MIN_STD, validate_args=False)


@dataclass
class ContextEncoding:
    """A context set, encoded once and reused for every target query.

    Attributes:
        q_zc: context latent ``q(z_c | C)``, batch shape ``[B, Z]``.
        mask: ``[B, N]``, True for real context points.
        keys, values: per-head cross-attention keys ``[B, heads, d, N]`` (transposed) and
            values ``[B, heads, N, d]`` (None for ``mlsm_v0``).
    """

    q_zc: Normal
    mask: torch.Tensor
    keys: torch.Tensor | None
    values: torch.Tensor | None


class MetaDynamicsNet(nn.Module):
    """The meta dynamics network on normalised tensors; see the module docstring. Its sizes have no
    defaults here: :class:`modules.models.meta_dynamics_model.MetaDynamicsModel` holds them.

    Example:
        >>> net = MetaDynamicsNet(x_dim=7, y_dim=6, variant="gssm", hidden_dim=32, latent_dim=4,
        ...                       message_passing_rounds=2, num_heads=4, decoder_layers=2, ensemble_size=1)
        >>> mask = torch.ones(2, 10, dtype=torch.bool)
        >>> enc = net.encode(torch.randn(2, 10, 7), torch.randn(2, 10, 6), mask)
        >>> z, q_zt, v = net.target_latent(enc, torch.randn(2, 5, 7), enc.q_zc.mean[:, None], sample=False)
        >>> mean, logvar = net.decode(torch.randn(2, 5, 7), z, v)
        >>> mean.shape  # [heads, B, M, Y]
        torch.Size([1, 2, 5, 6])
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        variant: Variant,
        hidden_dim: int,
        latent_dim: int,
        message_passing_rounds: int,
        num_heads: int,
        decoder_layers: int,
        ensemble_size: int,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.x_dim, self.y_dim, self.latent_dim = x_dim, y_dim, latent_dim
        h = hidden_dim
        self.embed = mlp(x_dim + y_dim, h, h, layers=2)
        rounds = message_passing_rounds if variant == "gssm" else 0
        self.blocks = nn.ModuleList(MessagePassingBlock(h, num_heads) for _ in range(rounds))
        self.context_latent = mlp(h, h, 2 * latent_dim, layers=1)
        self.has_cross_attention = variant in ("gssm", "mlsm_v1")
        if self.has_cross_attention:
            self.x_embed = mlp(x_dim, h, h, layers=1)  # shared by queries x_t and keys x_i
            self.cross = MaskedAttention(h, h, h, h, num_heads)
        if variant == "gssm":
            self.target_latent_head = mlp(latent_dim + h + x_dim, h, 2 * latent_dim, layers=2)
        decoder_in = x_dim + latent_dim + (h if variant == "mlsm_v1" else 0)
        self.decoder = EnsembleMLP(ensemble_size, decoder_in, h, 2 * y_dim, layers=decoder_layers)
        self.max_logvar = nn.Parameter(torch.full((y_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((y_dim,), -10.0))

    def encode(self, cx: torch.Tensor, cy: torch.Tensor, mask: torch.Tensor) -> ContextEncoding:
        """Encode a context ``cx [B, N, X]``, ``cy [B, N, Y]``, ``mask [B, N]``."""
        nodes = self.embed(torch.cat([cx, cy], dim=-1)[mask])  # [n, H], real nodes only
        for block in self.blocks:
            nodes = block(nodes, mask)
        h = scatter_nodes(nodes, mask)
        pooled = h.sum(1) / mask.sum(1, keepdim=True).clamp_min(1).to(h.dtype)  # empty context → zeros
        keys = values = None
        if self.has_cross_attention:
            keys, values = self.cross.project_keys(self.x_embed(cx[mask]), nodes, mask)
        return ContextEncoding(_gaussian(self.context_latent(pooled)), mask, keys, values)

    def message(self, enc: ContextEncoding, x: torch.Tensor) -> torch.Tensor | None:
        """Context→target message ``v_t [B, M, H]`` for targets ``x [B, M, X]``."""
        if not self.has_cross_attention:
            return None
        return self.cross.attend(self.x_embed(x), enc.keys, enc.values, enc.mask)

    def target_latent(
        self,
        enc: ContextEncoding,
        x: torch.Tensor,
        z_c: torch.Tensor,
        sample: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Normal | None, torch.Tensor | None]:
        """The latent the decoder reads for each target.

        Args:
            x: targets ``[B, M, X]``; z_c: context latent per target ``[B, M, Z]`` (or ``[B, 1, Z]``).
            sample: draw ``z_t`` (reparameterised, from ``generator``) instead of taking its mean.

        Returns:
            ``(z [B, M, Z], q(z_t) or None, v_t or None)``; for the MLSM variants ``z = z_c``.
        """
        v = self.message(enc, x)
        z_c = z_c.expand(*x.shape[:-1], self.latent_dim)
        if self.variant != "gssm":
            return z_c, None, v
        # residual around z_c: at initialisation z_t copies z_c, and v_t refines it per target
        delta_mean, raw_std = self.target_latent_head(torch.cat([z_c, v, x], dim=-1)).chunk(2, dim=-1)
        q_zt = Normal(z_c + delta_mean, F.softplus(raw_std) + MIN_STD, validate_args=False)
        return (sample_normal(q_zt, generator) if sample else q_zt.mean), q_zt, v

    def decode(self, x: torch.Tensor, z: torch.Tensor, v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and soft-clamped log-variance of ``p(y | x, z[, v])`` of every head, each ``[K, B, M, Y]``."""
        parts = [x, z] + ([v] if self.variant == "mlsm_v1" else [])
        mean, logvar = self.decoder(torch.cat(parts, dim=-1)).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar
