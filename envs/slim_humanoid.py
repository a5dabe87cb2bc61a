"""Slim humanoid: gymnasium ``Humanoid-v5`` without cinert, cvel, qfrc_actuator and cfrc_ext in
the observation (45 = ``qpos[2:]`` 22 + ``qvel`` 23), with scaled body masses and joint dampings.

* action: 17 values in [-1, 1], applied as ``0.4·a`` (Humanoid's control range is ±0.4), so the
  policy sees the same action range in every family;
* reward ``(0.25/0.015)·v_x − 0.1‖u‖² + 5·[1 < z < 2]`` with ``u = 0.4·a`` the applied control,
  ``v_x = qvel[0]`` (obs index 22) and ``z = qpos[2]`` (obs index 0) of the next observation;
* no termination (a fallen humanoid just stops earning the alive bonus); 1000 steps.

Tasks: the grids of `ScaleGridFamily` (DESIGN §5); extrapolation: every (mass, damping) pair of
each set {0.4, 0.5}, {0.6, 0.7}, {1.5, 1.6}, {1.7, 1.8} (16 tasks).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from envs.grid_family import ScaleGridFamily
from envs.scaled_mujoco import ScaledMujocoEnv

CTRL_RANGE = 0.4
CTRL_COST = 0.1
VX_WEIGHT = 0.25 / 0.015
ALIVE_BONUS = 5.0
Z_INDEX, VX_INDEX = 0, 22


class SlimHumanoidTaskEnv(ScaledMujocoEnv, HumanoidEnv):
    """Slim ``Humanoid-v5`` with ``mass_scale`` and ``damping_scale`` keyword arguments.

    Example:
        >>> env = SlimHumanoidTaskEnv(mass_scale=0.9)
        >>> env.reset(seed=0)[0].shape
        (45,)
    """

    ctrl_range = CTRL_RANGE

    def __init__(self, render_mode: str | None = None, **params: float):
        HumanoidEnv.__init__(
            self,
            render_mode=render_mode,
            terminate_when_unhealthy=False,
            include_cinert_in_observation=False,
            include_cvel_in_observation=False,
            include_qfrc_actuator_in_observation=False,
            include_cfrc_ext_in_observation=False,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(17,), dtype=np.float32)
        ScaledMujocoEnv.__init__(self, **params)

    @staticmethod
    def step_reward(next_obs, ctrl):
        z = next_obs[..., Z_INDEX]
        alive = (z > 1.0) & (z < 2.0)
        return VX_WEIGHT * next_obs[..., VX_INDEX] - CTRL_COST * (ctrl**2).sum(-1) + ALIVE_BONUS * alive


class SlimHumanoidFamily(ScaleGridFamily):
    """Slim-humanoid tasks; see the module docstring."""

    name = "slim_humanoid"
    env_id = "mbmrl/SlimHumanoid-v0"
    env_class = SlimHumanoidTaskEnv
    obs_dim = 45
    act_dim = 17
    extrapolation_sets = ((0.4, 0.5), (0.6, 0.7), (1.5, 1.6), (1.7, 1.8))
