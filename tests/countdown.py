"""A task family whose episodes end at a known step: a countdown that pays 1 per step and terminates
when it hits 0, and an agent that acts 0 and remembers its latents (tests of rollouts and the meta-test)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs import TaskFamily

EPISODE = 8


class CountdownEnv(gym.Env):
    """``obs = [steps left]``; reward 1 per step; terminates after ``ceil(lifetime)`` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, lifetime: float):
        self.lifetime, self.left = lifetime, lifetime

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = self.lifetime
        return np.array([self.left], np.float32), {}

    def step(self, action):
        self.left -= 1.0
        return np.array([self.left], np.float32), 1.0, self.left <= 0, False, {}


class CountdownFamily(TaskFamily):
    name = "countdown"
    param_names = ("lifetime",)
    defaults = {"lifetime": 3.0}
    train_ranges = {"lifetime": (2.0, 6.0)}
    obs_dim = 1
    act_dim = 1
    episode_length = EPISODE

    def test_tasks(self):
        return [
            self.make_task("short", "interpolation", lifetime=3.0),
            self.make_task("middle", "interpolation", lifetime=5.0),
            self.make_task("endless", "extrapolation", lifetime=50.0),  # truncated by the time limit
        ]

    def make_env(self, task, seed=None):
        env = gym.wrappers.TimeLimit(CountdownEnv(task.parameters["lifetime"]), EPISODE)
        if seed is not None:
            env.reset(seed=seed)
        return env

    def reward(self, obs, action, next_obs, params):
        return torch.ones(obs.shape[:-1])

    def terminated(self, next_obs, params):
        return next_obs[..., 0] <= 0


class RecordingAgent(nn.Module):
    """Acts 0 and remembers the latents it was asked to act on."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.latents: list[torch.Tensor] = []

    def act(self, obs, latent, deterministic=False, generator=None):
        self.latents.append(latent.clone())
        return torch.zeros(obs.shape[0], 1)
