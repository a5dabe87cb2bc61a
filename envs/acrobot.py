"""Acrobot with a continuous torque and varied link masses and link-1 length.

Gymnasium's ``Acrobot-v1`` "book" equations, RK4 with ``dt = 0.2``, angle wrapping and
velocity limits (±4π, ±9π), torque ``a ∈ [-1, 1]`` N·m. Varied: ``link1_mass``,
``link2_mass``, ``link1_length``. The centre of mass of link 1 is at half its length and
the moments of inertia scale like a rod's, ``I_k = I_0 · m_k · l_k²`` (with gymnasium's
``I_0 = 1`` at ``m = l = 1``), so at the defaults the dynamics are gymnasium's exactly.

* observation ``[cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2]``;
* reward ``(h/L − 1)/2 ∈ [−1, 0]`` of the next state, ``h = −l1 cos θ1 − l2 cos(θ1+θ2)``
  the tip height and ``L = l1 + l2``; no termination; truncation after 200 steps.

Train ranges (uniform): both masses [0.7, 1.3] kg, link-1 length [0.7, 1.3] m.
Interpolation tasks lie inside; extrapolation tasks have every parameter in {0.6, 1.45}.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from envs.classic_env import ClassicControlEnv
from envs.family import TaskFamily
from envs.rendering import draw_segments
from envs.task import Task

DT = 0.2
GRAVITY = 9.8
LINK_LENGTH_2 = 1.0
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0
MAX_VEL_1 = 4 * math.pi
MAX_VEL_2 = 9 * math.pi


def _wrap(x: float) -> float:
    """Gymnasium's ``wrap(x, -π, π)``."""
    while x > math.pi:
        x -= 2 * math.pi
    while x < -math.pi:
        x += 2 * math.pi
    return x


class AcrobotEnv(ClassicControlEnv):
    """Continuous-torque acrobot; physics given as keyword arguments.

    Example:
        >>> env = AcrobotEnv(link1_mass=1.2, link1_length=0.8)
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape
        (6,)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}
    defaults = {"link1_mass": 1.0, "link2_mass": 1.0, "link1_length": 1.0}
    obs_high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)

    def _apply_params(self, params: dict[str, float]) -> None:
        self.m1, self.m2 = params["link1_mass"], params["link2_mass"]
        self.l1 = params["link1_length"]
        self.lc1 = 0.5 * self.l1
        self.I1 = LINK_MOI * self.m1 * self.l1**2
        self.I2 = LINK_MOI * self.m2 * LINK_LENGTH_2**2

    def _initial_state(self) -> np.ndarray:
        return self.np_random.uniform(-0.1, 0.1, size=4).astype(np.float32).astype(np.float64)

    def dsdt(self, s: np.ndarray, torque: float) -> np.ndarray:
        """Gymnasium's ``_dsdt`` ("book" dynamics) with this env's masses, length and inertia."""
        m1, m2, l1, lc1, lc2, I1, I2 = self.m1, self.m2, self.l1, self.lc1, LINK_COM_POS_2, self.I1, self.I2
        theta1, theta2, dtheta1, dtheta2 = s
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * math.cos(theta2)) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * math.cos(theta2)) + I2
        phi2 = m2 * lc2 * GRAVITY * math.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * math.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * math.sin(theta2)
            + (m1 * lc1 + m2 * l1) * GRAVITY * math.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * math.sin(theta2) - phi2) / (
            m2 * lc2**2 + I2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.array([dtheta1, dtheta2, ddtheta1, ddtheta2])

    def _advance(self, s: np.ndarray, torque: float) -> np.ndarray:
        """One RK4 step of ``DT`` then gymnasium's wrapping and velocity limits."""
        h = DT / 2.0
        k1 = self.dsdt(s, torque)
        k2 = self.dsdt(s + h * k1, torque)
        k3 = self.dsdt(s + h * k2, torque)
        k4 = self.dsdt(s + DT * k3, torque)
        ns = s + DT / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        ns[0], ns[1] = _wrap(ns[0]), _wrap(ns[1])
        ns[2] = min(max(ns[2], -MAX_VEL_1), MAX_VEL_1)
        ns[3] = min(max(ns[3], -MAX_VEL_2), MAX_VEL_2)
        return ns

    def _step_reward(self, obs: np.ndarray) -> float:
        return float(_reward(obs[None].astype(np.float64), self.l1)[0])

    def _obs(self) -> np.ndarray:
        t1, t2, dt1, dt2 = self.state
        return np.array([math.cos(t1), math.sin(t1), math.cos(t2), math.sin(t2), dt1, dt2], dtype=np.float32)

    def _draw(self) -> np.ndarray:
        t1, t2 = self.state[0], self.state[1]
        p1 = (self.l1 * math.sin(t1), -self.l1 * math.cos(t1))
        p2 = (p1[0] + LINK_LENGTH_2 * math.sin(t1 + t2), p1[1] - LINK_LENGTH_2 * math.cos(t1 + t2))
        extent = self.l1 + LINK_LENGTH_2 + 0.2
        return draw_segments(
            [
                ((-extent, self.l1 + LINK_LENGTH_2), (extent, self.l1 + LINK_LENGTH_2), (0, 0, 0), 0.02),
                ((0.0, 0.0), p1, (0, 80, 200), 0.12),
                (p1, p2, (0, 160, 80), 0.12),
            ],
            half_extent=extent,
        )


def _reward(next_obs, link1_length):
    """``(h/L − 1)/2`` for numpy arrays or torch tensors ``next_obs [..., 6]``."""
    c1, s1, c2, s2 = next_obs[..., 0], next_obs[..., 1], next_obs[..., 2], next_obs[..., 3]
    height = -link1_length * c1 - LINK_LENGTH_2 * (c1 * c2 - s1 * s2)
    total = link1_length + LINK_LENGTH_2
    return 0.5 * (height / total - 1.0)


# test tasks whose masses and link-1 length all take one value (interpolation inside [0.7, 1.3])
UNIFORMLY_SCALED = {"interp-default": 1.0, "interp-heavy-long": 1.2, "interp-light-short": 0.8,
                    "extrap-heavy-long": 1.45, "extrap-light-short": 0.6}  # fmt: skip


class AcrobotFamily(TaskFamily):
    """Acrobot tasks; see the module docstring for dynamics, reward and ranges."""

    name = "acrobot"
    env_id = "mbmrl/Acrobot-v0"
    env_class = AcrobotEnv
    param_names = ("link1_length", "link1_mass", "link2_mass")
    defaults = AcrobotEnv.defaults
    train_ranges = {"link1_mass": (0.7, 1.3), "link2_mass": (0.7, 1.3), "link1_length": (0.7, 1.3)}
    obs_dim = 6
    act_dim = 1
    episode_length = 200

    def test_tasks(self) -> list[Task]:
        """Every parameter scaled alike (``UNIFORMLY_SCALED``), then one task that mixes a heavy link 1
        with a light short rest."""
        split = {"interp": "interpolation", "extrap": "extrapolation"}
        tasks = [self.make_task(name, split[name.split("-")[0]], **dict.fromkeys(self.param_names, scale))
                 for name, scale in UNIFORMLY_SCALED.items()]  # fmt: skip
        return [*tasks, self.make_task("extrap-mixed", "extrapolation", link1_mass=1.45, link2_mass=0.6,
                                       link1_length=0.6)]  # fmt: skip

    def reward(self, obs, action, next_obs, params):
        return _reward(next_obs, self.param(params, "link1_length"))

    def simulate(self, obs, action, params):
        """One RK4 step of ``DT`` of :meth:`AcrobotEnv.dsdt` for a batch, then the wrapping and limits."""
        c1, s1, c2, s2, dtheta1, dtheta2 = obs.double().unbind(-1)
        state = torch.stack([torch.atan2(s1, c1), torch.atan2(s2, c2), dtheta1, dtheta2], dim=-1)
        m1, m2, l1 = (self.param(params, name).double() for name in ("link1_mass", "link2_mass", "link1_length"))
        lc1, lc2, i1, i2 = 0.5 * l1, LINK_COM_POS_2, LINK_MOI * m1 * l1**2, LINK_MOI * m2 * LINK_LENGTH_2**2
        torque = action[..., 0].double().clamp(-1.0, 1.0)

        def dsdt(s: torch.Tensor) -> torch.Tensor:
            theta1, theta2, dtheta1, dtheta2 = s.unbind(-1)
            d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + i1 + i2
            d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + i2
            phi2 = m2 * lc2 * GRAVITY * torch.cos(theta1 + theta2 - math.pi / 2.0)
            phi1 = (-m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
                    - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
                    + (m1 * lc1 + m2 * l1) * GRAVITY * torch.cos(theta1 - math.pi / 2) + phi2)  # fmt: skip
            ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
                m2 * lc2**2 + i2 - d2**2 / d1
            )
            ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
            return torch.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], dim=-1)

        h = DT / 2.0
        k1 = dsdt(state)
        k2 = dsdt(state + h * k1)
        k3 = dsdt(state + h * k2)
        k4 = dsdt(state + DT * k3)
        ns = state + DT / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        t1, t2 = ns[..., 0], ns[..., 1]  # cos and sin need no wrapping
        limits = ns.new_tensor([MAX_VEL_1, MAX_VEL_2])
        velocities = ns[..., 2:].clamp(-limits, limits)
        return torch.cat([torch.stack([t1.cos(), t1.sin(), t2.cos(), t2.sin()], dim=-1), velocities], -1).to(obs.dtype)

    def project(self, obs):
        """Both (cos, sin) pairs renormalised, velocities clamped to ±4π and ±9π as the env does."""
        angles = obs[..., :4].unflatten(-1, (2, 2))
        angles = angles / angles.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        limits = obs.new_tensor([MAX_VEL_1, MAX_VEL_2])
        return torch.cat([angles.flatten(-2), obs[..., 4:].clamp(-limits, limits)], dim=-1)
