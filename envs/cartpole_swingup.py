"""Cart-pole swing-up with varied pole half-length, pole mass and cart mass.

Dynamics are gymnasium's ``CartPole-v1`` equations (explicit Euler, ``tau = 0.02``) with
:data:`SUBSTEPS` = 2 Euler steps per env step (dt 0.04 s, 200 steps = 8 s), a continuous
force ``a · 10 N`` with ``a ∈ [-1, 1]``, no angle limit and the pole starting hanging down.
Velocities are clipped to ±20 m/s and ±10π rad/s after each Euler step, as acrobot clips
its own; this keeps the observation space finite and is not reached in ordinary episodes.

* observation ``[x, ẋ, cos θ, sin θ, θ̇]`` (θ = 0 upright, as in gymnasium);
* reward ``r = (1 + cos θ)/2 · exp(-x² / (2·0.8²)) ∈ [0, 1]`` of the next state: highest
  upright and centred (no action cost);
* termination when the cart leaves the track, ``|x| > 2.4``; truncation after 200 steps.

Train ranges (uniform): pole half-length [0.35, 0.75] m, pole mass [0.05, 0.25] kg,
cart mass [0.6, 1.4] kg (gymnasium's 0.5, 0.1, 1.0 lie inside). Interpolation tasks lie
inside these ranges; extrapolation tasks have every varied parameter outside them
(half-length 0.3 or 0.85, pole mass 0.035 or 0.3, cart mass 0.5 or 1.6).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from envs.classic_env import ClassicControlEnv
from envs.family import TaskFamily
from envs.rendering import draw_segments
from envs.task import Task

GRAVITY = 9.8
FORCE_MAG = 10.0
TAU = 0.02
SUBSTEPS = 2
X_THRESHOLD = 2.4
X_SIGMA = 0.8
MAX_X_DOT = 20.0
MAX_THETA_DOT = 10 * math.pi


class CartPoleSwingUpEnv(ClassicControlEnv):
    """Continuous-force cart-pole swing-up; physics given as keyword arguments.

    Example:
        >>> env = CartPoleSwingUpEnv(pole_half_length=0.6, pole_mass=0.2)
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape
        (5,)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}
    defaults = {"pole_half_length": 0.5, "pole_mass": 0.1, "cart_mass": 1.0}
    # x stays within one step of the track end: |x| <= 2.4 + 2·0.04·20 < 5
    obs_high = np.array([5.0, MAX_X_DOT, 1.0, 1.0, MAX_THETA_DOT], dtype=np.float32)

    def _apply_params(self, params: dict[str, float]) -> None:
        self.length = params["pole_half_length"]
        self.masspole = params["pole_mass"]
        self.masscart = params["cart_mass"]
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length

    def _initial_state(self) -> np.ndarray:
        return np.array([0.0, 0.0, math.pi, 0.0]) + self.np_random.uniform(-0.05, 0.05, size=4)

    def euler_step(self, state: np.ndarray, force: float) -> np.ndarray:
        """One gymnasium ``CartPole`` Euler step of length ``tau`` from ``[x, ẋ, θ, θ̇]``."""
        x, x_dot, theta, theta_dot = state
        costheta, sintheta = math.cos(theta), math.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * sintheta) / self.total_mass
        thetaacc = (GRAVITY * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta**2 / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        return np.array([x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc])

    def _advance(self, state: np.ndarray, action: float) -> np.ndarray:
        force = FORCE_MAG * action
        for _ in range(SUBSTEPS):
            state = self.euler_step(state, force)
            state[1] = min(max(state[1], -MAX_X_DOT), MAX_X_DOT)
            state[3] = min(max(state[3], -MAX_THETA_DOT), MAX_THETA_DOT)
        return state

    def _step_reward(self, obs: np.ndarray) -> float:
        return float(_reward(obs[None].astype(np.float64))[0])

    def _step_terminated(self, obs: np.ndarray) -> bool:
        return bool(abs(obs[0]) > X_THRESHOLD)

    def _obs(self) -> np.ndarray:
        x, x_dot, theta, theta_dot = self.state
        return np.array([x, x_dot, math.cos(theta), math.sin(theta), theta_dot], dtype=np.float32)

    def _draw(self) -> np.ndarray:
        x, _, theta, _ = self.state
        tip = (x + 2 * self.length * math.sin(theta), 2 * self.length * math.cos(theta))
        return draw_segments(
            [
                ((-X_THRESHOLD, 0.0), (X_THRESHOLD, 0.0), (0, 0, 0), 0.02),
                ((x - 0.25, 0.0), (x + 0.25, 0.0), (60, 60, 200), 0.2),
                ((x, 0.0), tip, (200, 120, 50), 0.06),
            ],
            half_extent=2.8,
        )


def _reward(next_obs):
    """Works on numpy arrays and torch tensors ``[..., 5]``."""
    lib = torch if isinstance(next_obs, torch.Tensor) else np
    x, cos_theta = next_obs[..., 0], next_obs[..., 2]
    return 0.5 * (1.0 + cos_theta) * lib.exp(-(x**2) / (2.0 * X_SIGMA**2))


class CartPoleSwingUpFamily(TaskFamily):
    """Cart-pole swing-up tasks; see the module docstring for dynamics, reward and ranges."""

    name = "cartpole_swingup"
    env_id = "mbmrl/CartPoleSwingUp-v0"
    env_class = CartPoleSwingUpEnv
    param_names = ("cart_mass", "pole_half_length", "pole_mass")
    defaults = CartPoleSwingUpEnv.defaults
    train_ranges = {
        "pole_half_length": (0.35, 0.75),
        "pole_mass": (0.05, 0.25),
        "cart_mass": (0.6, 1.4),
    }
    obs_dim = 5
    act_dim = 1
    episode_length = 200

    def test_tasks(self) -> list[Task]:
        t = self.make_task
        return [
            t("interp-default", "interpolation", pole_half_length=0.5, pole_mass=0.1, cart_mass=1.0),
            t("interp-long-heavy", "interpolation", pole_half_length=0.7, pole_mass=0.2, cart_mass=1.2),
            t("interp-short-light", "interpolation", pole_half_length=0.4, pole_mass=0.07, cart_mass=0.7),
            t("extrap-long-heavy", "extrapolation", pole_half_length=0.85, pole_mass=0.3, cart_mass=1.6),
            t("extrap-short-light", "extrapolation", pole_half_length=0.3, pole_mass=0.035, cart_mass=0.5),
            t("extrap-long-light", "extrapolation", pole_half_length=0.85, pole_mass=0.035, cart_mass=0.5),
        ]

    def reward(self, obs, action, next_obs, params):
        return _reward(next_obs)

    def terminated(self, next_obs, params):
        return next_obs[..., 0].abs() > X_THRESHOLD

    def simulate(self, obs, action, params):
        """:data:`SUBSTEPS` Euler steps of :meth:`CartPoleSwingUpEnv.euler_step` for a batch, with its clips."""
        names = ("pole_half_length", "pole_mass", "cart_mass")
        length, masspole, masscart = (self.param(params, name).double() for name in names)
        total_mass, polemass_length = masspole + masscart, masspole * length
        force = FORCE_MAG * action[..., 0].double().clamp(-1.0, 1.0)
        x, x_dot, cos_theta, sin_theta, theta_dot = obs.double().unbind(-1)
        theta = torch.atan2(sin_theta, cos_theta)
        for _ in range(SUBSTEPS):
            costheta, sintheta = torch.cos(theta), torch.sin(theta)
            temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
            thetaacc = (GRAVITY * sintheta - costheta * temp) / (
                length * (4.0 / 3.0 - masspole * costheta**2 / total_mass)
            )
            xacc = temp - polemass_length * thetaacc * costheta / total_mass
            x, theta = x + TAU * x_dot, theta + TAU * theta_dot
            x_dot = (x_dot + TAU * xacc).clamp(-MAX_X_DOT, MAX_X_DOT)
            theta_dot = (theta_dot + TAU * thetaacc).clamp(-MAX_THETA_DOT, MAX_THETA_DOT)
        return torch.stack([x, x_dot, theta.cos(), theta.sin(), theta_dot], dim=-1).to(obs.dtype)

    def project(self, obs):
        """The (cos θ, sin θ) pair renormalised, velocities clamped to ±20 m/s and ±10π rad/s as the env does."""
        pair = obs[..., 2:4]
        pair = pair / pair.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        x_dot = obs[..., 1:2].clamp(-MAX_X_DOT, MAX_X_DOT)
        theta_dot = obs[..., 4:5].clamp(-MAX_THETA_DOT, MAX_THETA_DOT)
        return torch.cat([obs[..., :1], x_dot, pair, theta_dot], dim=-1)
