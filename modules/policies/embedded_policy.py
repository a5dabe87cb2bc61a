"""`EmbeddedPolicy`: M-DPILCO's deterministic policy ``π(a | s, h)``."""

from __future__ import annotations

import torch
from torch import nn

from common.sampling import sample_normal
from modules.blocks import Normalizer, mlp


class EmbeddedPolicy(nn.Module):
    """``a = tanh(MLP([norm(s), h]))``: one policy for every task, told the task by its embedding ``h``
    (Deep PILCO's policy is deterministic). :meth:`act` follows :class:`envs.rollout.Agent`: the mean
    action when ``deterministic``, else the mean plus ``N(0, exploration_std²)`` clipped to ``[-1, 1]``
    (data collection and the meta-test's online context explore).

    Shapes: ``obs [N, O]``, ``latent [N, E]`` → ``[N, A]``.

    Example:
        >>> policy = EmbeddedPolicy(obs_dim=3, act_dim=1, embedding_dim=2, hidden_dim=8)
        >>> policy(torch.zeros(5, 3), torch.zeros(5, 2)).shape
        torch.Size([5, 1])
    """

    def __init__(self, obs_dim: int, act_dim: int, embedding_dim: int, hidden_dim: int = 64, layers: int = 2,
                 exploration_std: float = 0.2):  # fmt: skip
        super().__init__()
        if exploration_std < 0:
            raise ValueError(f"exploration_std={exploration_std}; expected >= 0")
        self.net = mlp(obs_dim + embedding_dim, hidden_dim, act_dim, layers)
        self.obs_normalizer = Normalizer(obs_dim)
        self.exploration_std = exploration_std

    def forward(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(torch.cat([self.obs_normalizer.normalize(obs), latent], -1)))

    def act(self, obs: torch.Tensor, latent: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        action = self(obs, latent)
        if deterministic or self.exploration_std == 0:
            return action
        noise = torch.distributions.Normal(torch.zeros_like(action), torch.full_like(action, self.exploration_std))
        return (action + sample_normal(noise, generator)).clamp(-1.0, 1.0)
