"""`ParticleModelEnv`: M-DPILCO's particles stepped through the ensemble dynamics, differentiably."""

from __future__ import annotations

import torch

from envs import TaskFamily
from envs.rollout import EnvStep
from modules.models.embedded_dynamics import EmbeddedDynamics


class ParticleModelEnv:
    """``B = K · R`` particles of :class:`modules.models.embedded_dynamics.EmbeddedDynamics` as one
    :class:`envs.rollout.BatchedEnv`: rows ``k·R … k·R + R − 1`` step with member ``k`` (each particle
    keeps its member for the whole rollout) and their task embedding ``h [B, E]``; next states are the
    members' mean predictions projected to physical ones (:meth:`TaskFamily.project`; our tasks are
    deterministic), rewards and terminations the family's exact batched functions of each row's
    ``params [B, P]``. Nothing is detached: gradients flow from rewards back to actions and start
    states (the pathwise policy gradient).

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> model = EmbeddedDynamics(6, 1, num_tasks=2, embedding_dim=2, members=2, hidden_dim=8)
        >>> env = ParticleModelEnv(model, fam, torch.zeros(4, 2), torch.ones(4, 4))
        >>> start = env.reset(torch.zeros(4, 6))
        >>> env.step(torch.zeros(4, 1)).reward.shape
        torch.Size([4])
    """

    def __init__(self, model: EmbeddedDynamics, family: TaskFamily, h: torch.Tensor, params: torch.Tensor):
        if h.shape[0] % model.members:
            raise ValueError(f"{h.shape[0]} particles do not split over {model.members} ensemble members")
        self.model, self.family, self.h, self.params = model, family, h, params
        self.state: torch.Tensor | None = None

    def reset(self, start_obs: torch.Tensor) -> torch.Tensor:
        """Start every particle at ``start_obs [B, O]``; returns them."""
        self.state = start_obs
        return start_obs

    def step(self, action: torch.Tensor) -> EnvStep:
        if self.state is None:
            raise RuntimeError("ParticleModelEnv.step before reset(start_obs)")
        obs, k = self.state, self.model.members
        x = torch.cat([obs, action], -1).view(k, -1, obs.shape[-1] + action.shape[-1])
        delta = self.model.delta_each(x, self.h.view(k, -1, self.h.shape[-1])).reshape_as(obs)
        next_obs = self.family.project(obs + delta)
        terminated = self.family.terminated(next_obs, self.params)
        reward = self.family.reward(obs, action, next_obs, self.params)
        self.state = next_obs
        return EnvStep(next_obs, next_obs, reward, terminated, torch.zeros_like(terminated))

