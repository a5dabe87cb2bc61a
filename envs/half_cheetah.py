"""Half-cheetah (gymnasium ``HalfCheetah-v5``) with scaled body masses and joint dampings.

* observation: HalfCheetah-v5's 17 (``qpos[1:]``, ``qvel``); action: 6 torques in [-1, 1];
* reward ``v_x − 0.1‖a‖²`` with ``v_x = qvel[0]`` read from the *next observation* (index 8),
  so the batched reward is exact (gymnasium's own uses a finite difference of positions);
* no termination; truncation after 1000 steps.

Tasks: the grids of `ScaleGridFamily` (DESIGN §5); extrapolation: for each set {0.2, 0.3},
{0.4, 0.5}, {1.5, 1.6}, {1.7, 1.8}, every (mass, damping) pair of that set (16 tasks).
"""

from __future__ import annotations

from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from envs.grid_family import ScaleGridFamily
from envs.scaled_mujoco import ScaledMujocoEnv

CTRL_COST = 0.1
VX_INDEX = 8


class HalfCheetahTaskEnv(ScaledMujocoEnv, HalfCheetahEnv):
    """``HalfCheetah-v5`` with ``mass_scale`` and ``damping_scale`` keyword arguments.

    Example:
        >>> env = HalfCheetahTaskEnv(mass_scale=1.1, damping_scale=0.9)
        >>> env.reset(seed=0)[0].shape
        (17,)
    """

    ctrl_range = 1.0  # HalfCheetah's own control range

    def __init__(self, render_mode: str | None = None, **params: float):
        HalfCheetahEnv.__init__(self, render_mode=render_mode)
        ScaledMujocoEnv.__init__(self, **params)

    @staticmethod
    def step_reward(next_obs, ctrl):
        return next_obs[..., VX_INDEX] - CTRL_COST * (ctrl**2).sum(-1)


class HalfCheetahFamily(ScaleGridFamily):
    """Half-cheetah tasks; see the module docstring."""

    name = "half_cheetah"
    env_id = "mbmrl/HalfCheetah-v0"
    env_class = HalfCheetahTaskEnv
    obs_dim = 17
    act_dim = 6
    extrapolation_sets = ((0.2, 0.3), (0.4, 0.5), (1.5, 1.6), (1.7, 1.8))
