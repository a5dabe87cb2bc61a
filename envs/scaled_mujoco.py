"""`ScaledMujocoEnv`: body masses and joint dampings of a MuJoCo env scaled from saved originals.

Importing this module also routes MuJoCo's C-level warnings (e.g. the ``settotalmass``
deprecation in gymnasium's ``humanoid.xml``) into Python's ``warnings``/``logging`` instead of a
``MUJOCO_LOG.TXT`` in the working directory.
"""

from __future__ import annotations

import logging
import warnings
from typing import ClassVar

import mujoco
import numpy as np

from envs.parametric_env import ParametricEnv

log = logging.getLogger(__name__)
# deprecations in the model files gymnasium ships: not actionable by our users
_KNOWN_MODEL_FILE_WARNINGS = ("is deprecated",)


def _route_mujoco_warning(message: str) -> None:
    if any(s in message for s in _KNOWN_MODEL_FILE_WARNINGS):
        log.debug("MuJoCo: %s", message)
    else:
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


mujoco.set_mju_user_warning(_route_mujoco_warning)


class ScaledMujocoEnv(ParametricEnv):
    """Mixin for gymnasium MuJoCo envs with physics ``mass_scale`` and ``damping_scale``.

    Every ``model.body_mass`` and ``model.dof_damping`` entry is the saved original times its
    scale (as in CaDM's environments: masses only, inertias unchanged), so setting a scale
    back to 1 restores the original dynamics bit for bit. A subclass lists this mixin before the
    gymnasium env, calls the gymnasium env's ``__init__`` first, then
    ``ScaledMujocoEnv.__init__(self, **params)``, and sets :attr:`ctrl_range` and
    :meth:`step_reward`.

    ``step`` takes actions in [-1, 1], applies ``ctrl_range · a`` and replaces gymnasium's
    reward by :meth:`step_reward`, the one function the family's batched reward calls too.
    """

    defaults = {"mass_scale": 1.0, "damping_scale": 1.0}
    #: the applied control is ``ctrl_range · a`` for an action ``a`` in [-1, 1]
    ctrl_range: ClassVar[float]

    def __init__(self, **params: float):
        self._original_mass = np.array(self.model.body_mass, copy=True)
        self._original_damping = np.array(self.model.dof_damping, copy=True)
        super().__init__(**params)

    def _apply_params(self, params: dict[str, float]) -> None:
        self.model.body_mass[:] = self._original_mass * params["mass_scale"]
        self.model.dof_damping[:] = self._original_damping * params["damping_scale"]

    @staticmethod
    def step_reward(next_obs, ctrl):
        """Reward ``[...]`` of arriving in ``next_obs [..., O]`` under the applied control ``ctrl
        [..., A]``; numpy arrays or torch tensors."""
        raise NotImplementedError

    def step(self, action):
        ctrl = self.ctrl_range * self._check_action(action)
        obs, _, terminated, truncated, info = super().step(ctrl)
        return obs, float(self.step_reward(obs, ctrl)), terminated, truncated, info
