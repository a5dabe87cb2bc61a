"""`TanhGaussianPolicy`: SAC's actor ``π(a | s, code)``, a Gaussian squashed by tanh into ``[-1, 1]``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.blocks import Normalizer, mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # CleanRL's bounds: a std in [0.007, 7.4] before the squash


class TanhGaussianPolicy(nn.Module):
    """``a = tanh(u)``, ``u ~ N(μ(s, c), diag σ(s, c)²)``: one amortized policy for every task, the
    task given by ``code`` (a latent ``z_c``, or the physics code of the gap ladder's rung a).

    The input ``[s, code]`` is standardised by a running :class:`Normalizer` saved with the policy
    (its learner updates it; the critics read the same :meth:`features`). ``log σ`` is squashed into
    ``[LOG_STD_MIN, LOG_STD_MAX]`` (CleanRL), so the entropy bonus can neither blow the std up nor
    drive it to 0. ``act`` is the :class:`envs.rollout.Agent` interface of the rollout loop and the meta-test.

    Shapes: ``obs [..., O]``, ``code [..., Z]`` → actions ``[..., A]`` in ``[-1, 1]``, log-probabilities ``[...]``.

    Example:
        >>> pi = TanhGaussianPolicy(obs_dim=6, code_dim=3, act_dim=1, hidden_dim=32)
        >>> action, log_prob = pi.sample(torch.randn(5, 6), torch.randn(5, 3), torch.Generator().manual_seed(0))
        >>> action.shape, log_prob.shape, bool(action.abs().max() <= 1)
        (torch.Size([5, 1]), torch.Size([5]), True)
    """

    def __init__(self, obs_dim: int, code_dim: int, act_dim: int, hidden_dim: int = 256):
        super().__init__()
        self.input_normalizer = Normalizer(obs_dim + code_dim)
        self.net = mlp(obs_dim + code_dim, hidden_dim, 2 * act_dim, layers=2)

    def features(self, obs: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The standardised input ``[..., O + Z]`` the actor (and the learner's critics) read."""
        return self.input_normalizer.normalize(torch.cat([obs, code], dim=-1))

    def forward(self, obs: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ)`` of the pre-squash Gaussian, each ``[..., A]``."""
        mean, raw = self.net(self.features(obs, code)).chunk(2, dim=-1)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1)

    def sample(self, obs: torch.Tensor, code: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """A reparameterised action ``[..., A]`` (noise from ``generator``) and its log-probability ``[...]``
        under the squashed distribution (the tanh's change of variables included)."""
        mean, log_std = self(obs, code)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        u = mean + log_std.exp() * eps
        gaussian = -0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))  # log(1 − tanh(u)²), stable for large |u|
        return torch.tanh(u), (gaussian - log_det).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, latent: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """An action in ``[-1, 1]``: a sample (noise from ``generator``), or ``tanh(μ)`` if ``deterministic``."""
        if deterministic:
            return torch.tanh(self(obs, latent)[0])
        return self.sample(obs, latent, generator)[0]
