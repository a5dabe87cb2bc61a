"""`MPPI`: model-predictive path-integral control over batched action sequences (Williams et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from common.settings import Settings
from common.validation import INTEGER_1, POSITIVE, Range
from envs.rollout import GivenStartEnv, rollout

SequenceReturns = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(start_obs [N·K, O], actions [H, N·K, A]) → returns [N·K]``: the return of each action sequence
from its start state (row ``n·K + k`` is candidate ``k`` of state ``n``)."""


def open_loop_returns(env: GivenStartEnv) -> SequenceReturns:
    """:data:`SequenceReturns` of action sequences played open loop in ``env`` (reset to the start states
    for each batch of sequences): the sum of its rewards (nothing after an imagined termination,
    :func:`envs.rollout.rollout`)."""

    def returns(start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        play = lambda obs, t, trajectory: (actions[t], {})  # noqa: E731
        return rollout(env, play, env.reset(start), actions.shape[0]).reward.sum(0)

    return returns


@dataclass(frozen=True)
class MPPISettings(Settings):
    """MPPI's settings, one block in a config (``mpc: {horizon: 40}``).

    Attributes:
        horizon: planned steps ``H``; samples: ``K`` candidate sequences per state per round;
        iterations: rounds per :meth:`MPPI.plan` call; noise_std: the candidates' Gaussian noise;
        temperature: MPPI's λ, in units of the return: lower is greedier.
    """

    RANGES: ClassVar[dict[str, Range]] = {"horizon": INTEGER_1, "samples": INTEGER_1, "iterations": INTEGER_1,
                                          "noise_std": POSITIVE, "temperature": POSITIVE}  # fmt: skip

    horizon: int = 20
    samples: int = 64
    iterations: int = 1
    noise_std: float = 0.5
    temperature: float = 0.03


class MPPI:
    """Plans ``horizon`` actions for ``N`` states at once and returns the first of each plan.

    Each :meth:`plan` call runs ``iterations`` rounds of: ``samples`` candidate sequences around the
    current mean plan (Gaussian noise of std ``noise_std``, clipped to ``[-1, 1]``), their returns from
    ``returns_fn`` (all ``N · K`` candidates as one batch), and the mean plan moved to the
    return-weighted average ``Σ_k softmax(R_k / temperature) U_k``. The plan is kept between calls
    (shifted by one step, the new last action 0) as the next call's warm start; :meth:`reset` drops it
    (a new batch of episodes), as does a call with another number of states.

    Args:
        act_dim: action size ``A``; settings: :class:`MPPISettings`.

    Example:
        >>> planner = MPPI(act_dim=1, settings=MPPISettings(horizon=5))
        >>> go_right = lambda obs, actions: actions.sum((0, 2))  # the return: the sum of the actions
        >>> planner.plan(torch.zeros(3, 2), go_right, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 1])
    """

    def __init__(self, act_dim: int, settings: MPPISettings = MPPISettings()):
        horizon, samples, iterations = settings.horizon, settings.samples, settings.iterations  # checked by the block
        self.act_dim, self.horizon, self.samples, self.iterations = act_dim, horizon, samples, iterations
        self.noise_std, self.temperature = settings.noise_std, settings.temperature
        self.mean_plan: torch.Tensor | None = None  # [N, H, A]

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self.mean_plan = None

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, returns_fn: SequenceReturns, generator: torch.Generator) -> torch.Tensor:
        """The first planned action ``[N, A]`` for each of the states ``obs [N, O]``."""
        n, k, h, a = obs.shape[0], self.samples, self.horizon, self.act_dim
        if self.mean_plan is None or self.mean_plan.shape[0] != n:
            self.mean_plan = obs.new_zeros(n, h, a)
        start = obs.repeat_interleave(k, dim=0)  # [N·K, O]
        for _ in range(self.iterations):
            noise = torch.randn(n, k, h, a, generator=generator, device=obs.device) * self.noise_std
            candidates = (self.mean_plan[:, None] + noise).clamp(-1.0, 1.0)  # [N, K, H, A]
            returns = returns_fn(start, candidates.reshape(n * k, h, a).transpose(0, 1)).view(n, k)
            if not torch.isfinite(returns).all():
                raise FloatingPointError("MPPI: a candidate's predicted return is NaN/inf; the model is unstable here")
            weights = torch.softmax(returns / self.temperature, dim=1)
            self.mean_plan = (weights[:, :, None, None] * candidates).sum(1)
        action = self.mean_plan[:, 0].clone()
        self.mean_plan = torch.cat([self.mean_plan[:, 1:], torch.zeros_like(self.mean_plan[:, :1])], dim=1)
        return action
