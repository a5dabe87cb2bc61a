"""`ParametricEnv`: a gymnasium env whose physics parameters can be set and restored exactly."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.task import validate_params


class ParametricEnv(gym.Env):
    """Base of our envs: physics parameters are absolute values set from saved defaults.

    ``set_params(**p)`` recomputes every derived quantity from the defaults plus ``p``
    (never by scaling the current values), so setting a parameter back restores the
    dynamics bit for bit. Subclasses define :attr:`defaults` and :meth:`_apply_params`.
    """

    defaults: ClassVar[dict[str, float]]
    action_space: gym.spaces.Box

    def __init__(self, **params: float):
        self._params: dict[str, float] = {}
        self.set_params(**params)

    def set_params(self, **params: float) -> None:
        """Set physics parameters (absolute values); the others return to their defaults."""
        checked = validate_params(type(self).__name__, params, tuple(self.defaults))
        self._params = {**self.defaults, **checked}
        self._apply_params(self._params)

    def get_params(self) -> dict[str, float]:
        """The current physics parameters."""
        return dict(self._params)

    def _apply_params(self, params: dict[str, float]) -> None:
        raise NotImplementedError

    def _check_action(self, action: Any) -> np.ndarray:
        """The action as a float64 array clipped to the action space; wrong shape → ValueError."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"{type(self).__name__}: action of shape {a.shape} (value {action!r}); "
                f"expected shape {self.action_space.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{type(self).__name__}: action {action!r} is not finite")
        return np.clip(a, self.action_space.low, self.action_space.high)
