"""`ClassicControlEnv`: the gymnasium side (spaces, reset, step, render) of our classic envs."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

from envs.parametric_env import ParametricEnv


class ClassicControlEnv(ParametricEnv):
    """A classic-control env: one action in [-1, 1], an internal ``state`` the observation encodes.

    Subclasses set :attr:`obs_high` and ``metadata`` and supply the physics: the start state, one
    env step of the state, the observation, the reward (and termination) of the next observation,
    and a picture of the state.
    """

    #: the observation space is ``[-obs_high, obs_high]``
    obs_high: ClassVar[np.ndarray]

    def __init__(self, render_mode: str | None = None, **params: float):
        super().__init__(**params)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-self.obs_high, self.obs_high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.state: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = self._initial_state()
        return self._obs(), {}

    def step(self, action):
        assert self.state is not None, "call reset() before step()"
        self.state = self._advance(self.state, float(self._check_action(action)[0]))
        obs = self._obs()
        return obs, self._step_reward(obs), self._step_terminated(obs), False, {}

    def render(self):
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        return self._draw()

    def _initial_state(self) -> np.ndarray:
        """A start state drawn with ``self.np_random``."""
        raise NotImplementedError

    def _advance(self, state: np.ndarray, action: float) -> np.ndarray:
        """The state one env step after ``state`` under the clipped ``action``."""
        raise NotImplementedError

    def _obs(self) -> np.ndarray:
        """The float32 observation of ``self.state``."""
        raise NotImplementedError

    def _step_reward(self, obs: np.ndarray) -> float:
        """The reward of arriving in ``obs``."""
        raise NotImplementedError

    def _step_terminated(self, obs: np.ndarray) -> bool:
        """Does the episode end on arriving in ``obs``? Never, unless a subclass says so."""
        return False

    def _draw(self) -> np.ndarray:
        """An RGB picture of ``self.state``."""
        raise NotImplementedError
