"""`ActorCritic`: Gaussian actor and value critic on ``[s, z_c]``, one network for all tasks."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal

from common.sampling import sample_normal
from modules.blocks import Normalizer, mlp


class ActorCritic(nn.Module):
    """``π(a | s, z_c) = N(μ(s, z_c), diag σ²)`` with a state-independent ``log σ``, and ``V(s, z_c)``.

    Actions are sampled unbounded and clipped to ``[-1, 1]`` by the caller when applied (the
    log-probability is that of the unclipped sample, as in CleanRL's continuous PPO). The input
    ``[s, z_c]`` is standardised by a running :class:`Normalizer` saved with the policy; the action
    std never falls below ``min_std`` (a floor on exploration, no gradient below it); the critic
    predicts standardised returns (a second running normaliser, updated by the learner), so the
    value loss has unit scale whatever the reward scale and does not swamp the actor's gradient
    under global gradient clipping. ``forward`` returns values in raw return units.

    Shapes: ``obs [..., O]``, ``latent [..., Z]`` → actions ``[..., A]``, values ``[...]``.

    Example:
        >>> ac = ActorCritic(obs_dim=6, latent_dim=4, act_dim=1, hidden_dim=32)
        >>> dist, value = ac(torch.randn(5, 6), torch.randn(5, 4))
        >>> dist.sample().shape, value.shape
        (torch.Size([5, 1]), torch.Size([5]))
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        act_dim: int,
        hidden_dim: int = 64,
        init_log_std: float = -0.5,
        min_std: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= min_std < 1e3:
            raise ValueError(f"min_std={min_std} must be >= 0 (0: no floor)")
        self.min_log_std = float("-inf") if min_std == 0 else math.log(min_std)
        in_dim = obs_dim + latent_dim
        self.input_normalizer = Normalizer(in_dim)
        self.value_normalizer = Normalizer(1)
        self.actor = mlp(in_dim, hidden_dim, act_dim, layers=2)
        self.critic = mlp(in_dim, hidden_dim, 1, layers=2)
        self.log_std = nn.Parameter(torch.full((act_dim,), init_log_std))
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)  # near-zero initial actions
        nn.init.zeros_(self.actor[-1].bias)

    def features(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.input_normalizer.normalize(torch.cat([obs, latent], dim=-1))

    def forward(self, obs: torch.Tensor, latent: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        """Action distribution and value of ``[obs, latent]``."""
        h = self.features(obs, latent)
        mean = self.actor(h)
        value = self.value_normalizer.denormalize(self.critic(h)).squeeze(-1)
        std = self.log_std.clamp_min(self.min_log_std).exp()  # the floor keeps exploration alive
        return Normal(mean, std.expand_as(mean), validate_args=False), value

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        latent: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """An action in ``[-1, 1]``: the clipped sample (noise from ``generator``), or the
        clipped mean if ``deterministic``."""
        dist, _ = self(obs, latent)
        return (dist.mean if deterministic else sample_normal(dist, generator)).clamp(-1.0, 1.0)
