"""`L2AAgent`: GrBAL's controller — adapt the dynamics MLP to the last M transitions, then plan by MPPI."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from common.clock import synchronized_clock
from envs import TaskFamily
from envs.rollout import StepPolicy, Trajectory
from modules.models.adaptive_dynamics import AdaptiveDynamics
from modules.models.model_env import ModelEnv, adaptive_dynamics_next_state
from modules.policies.mppi import MPPI, open_loop_returns


def last_transitions(x: torch.Tensor, y: torch.Tensor, count: torch.Tensor, m: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The last ``m`` of the first ``count [B]`` transitions of ``x [B, N, X]``, ``y [B, N, O]``, as
    ``[B, m, ·]`` with a mask of those that exist (fewer than ``m`` at the start)."""
    if x.shape[1] == 0:  # nothing seen yet: the weights stay the meta-learned ones
        empty = torch.zeros(x.shape[0], m, dtype=torch.bool, device=x.device)
        return x.new_zeros(x.shape[0], m, x.shape[-1]), y.new_zeros(y.shape[0], m, y.shape[-1]), empty
    index = count[:, None] - m + torch.arange(m, device=x.device)  # [B, m]
    mask = index >= 0
    index = index.clamp_min(0)
    take = lambda t: t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    return take(x), take(y), mask


class L2AAgent(nn.Module):
    """An :class:`envs.rollout.Agent` for ``T`` tasks: before every action, each environment's dynamics
    MLP is adapted to its last ``recent`` real transitions (:meth:`AdaptiveDynamics.adapt`), then
    :class:`modules.policies.mppi.MPPI` plans in the adapted model with the family's exact reward of the task's
    ``params``. In the protocol's online context phase the transitions are the context so far
    (:meth:`infer_latent` keeps them; L2A has no latent, ``Z = 0``); in the evaluation episodes
    (:meth:`evaluation_policy`) they are the task's online context followed by the episode so far.
    Rows are task-major, ``N = T · M``. ``seconds`` / ``actions`` is the adaptation and planning time
    per action (batched calls over all rows).

    Example:
        >>> from envs import make_family
        >>> from modules.policies.mppi import MPPISettings
        >>> fam = make_family("acrobot")
        >>> planner = MPPI(1, MPPISettings(horizon=3, samples=4))
        >>> agent = L2AAgent(AdaptiveDynamics(6, 1, hidden_dim=8), fam, torch.ones(2, 4), planner)
        >>> q = agent.infer_latent(torch.zeros(2, 5, 7), torch.zeros(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
        >>> agent.act(torch.zeros(2, 6), q.mean).shape
        torch.Size([2, 1])
    """

    def __init__(self, model: AdaptiveDynamics, family: TaskFamily, params: torch.Tensor, planner: MPPI,
                 recent: int = 16, seed: int = 0):  # fmt: skip
        super().__init__()
        self.model, self.family, self.params, self.planner, self.recent = model, family, params, planner, recent
        self.noise = torch.Generator(device=params.device).manual_seed(seed)
        self.context: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.seconds, self.actions = 0.0, 0

    def infer_latent(self, context_x: torch.Tensor, context_y: torch.Tensor, mask: torch.Tensor) -> Normal:
        """Keep the context ``[T, n, ·]`` (its first ``mask.sum(1)`` transitions) for :meth:`act`; an
        empty latent."""
        self.context = (context_x, context_y, mask.sum(1))
        empty = context_x.new_zeros(context_x.shape[0], 0)
        return Normal(empty, torch.ones_like(empty))

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, recent_x: torch.Tensor, recent_y: torch.Tensor, mask: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Actions ``[N, A]`` for ``obs [N, O]`` after adapting to each row's ``recent [N, m, ·]``."""
        start = synchronized_clock()
        with torch.inference_mode(False):  # torch.func.grad differentiates under no_grad, not in inference mode
            weights = self.model.adapt(recent_x.clone(), recent_y.clone(), mask.clone())
        k = self.planner.samples
        rows_per_task = obs.shape[0] // self.params.shape[0] * k
        params = self.params.repeat_interleave(rows_per_task, dim=0)

        adapted = ModelEnv(adaptive_dynamics_next_state(self.model, weights, k), self.family, params)
        action = self.planner.plan(obs, open_loop_returns(adapted), self.noise if generator is None else generator)
        self.seconds += synchronized_clock() - start
        self.actions += obs.shape[0]
        return action

    def act(self, obs: torch.Tensor, latent: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """The online context phase: ``obs [T, O]``, one row per task, adapted to its context so far."""
        if self.context is None:
            raise RuntimeError("L2AAgent.act before infer_latent: it adapts to the transitions it was given")
        cx, cy, count = self.context
        if obs.shape[0] != cx.shape[0]:
            raise ValueError(f"obs of {obs.shape[0]} rows for a context of {cx.shape[0]} tasks; expected one row each")
        return self.plan(obs, *last_transitions(cx, cy, count, self.recent), generator)

    def evaluation_policy(self, context_x: torch.Tensor, context_y: torch.Tensor, episodes: int) -> StepPolicy:
        """The protocol's evaluation step policy for ``episodes`` episodes per task: each row adapts to
        its task's online context ``[T, n, ·]`` followed by its episode so far."""
        self.planner.reset()
        cx, cy = context_x.repeat_interleave(episodes, 0), context_y.repeat_interleave(episodes, 0)
        n = cx.shape[1]

        def act(obs: torch.Tensor, t: int, trajectory: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            device = cx.device
            x, y = cx, cy
            if t > 0:  # the trajectory's tensors exist from its first step on
                seen_x = torch.cat([trajectory.obs[:t], trajectory.action[:t].clamp(-1, 1)], -1).transpose(0, 1)
                seen_y = (trajectory.next_obs[:t] - trajectory.obs[:t]).transpose(0, 1)
                x, y = torch.cat([cx, seen_x.to(device)], 1), torch.cat([cy, seen_y.to(device)], 1)
            count = torch.full((x.shape[0],), n + t, device=device)
            return self.plan(obs.to(device), *last_transitions(x, y, count, self.recent)).to(obs.device), {}

        return act
