"""`TaskFamily`: the contract every family of MDPs that differ only in physics fulfils."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from envs.task import Task, validate_params

# The protocol's training task set, said once: the data module (GSSM+APS) and BudgetSettings (the other
# methods) default to ``train_tasks(NUM_TRAIN_TASKS, TASK_SEED, TASK_DESIGN)``; spread, not i.i.d. (DESIGN §5.1).
NUM_TRAIN_TASKS, TASK_SEED, TASK_DESIGN = 16, 0, "sobol"


class TaskFamily(ABC):
    """A distribution ``p(M)`` of MDPs sharing state and action spaces, differing in physics.

    Subclasses set the class attributes and implement :meth:`test_tasks` and :meth:`reward`,
    and :meth:`terminated` where an episode can end early. The batched torch ``reward``/``terminated`` must equal what
    ``env.step`` returns (tests check it), so imagined rollouts use the exact functions.
    They take the task's physics parameters ``params [..., P]`` (order :attr:`param_names`)
    because some rewards depend on them (acrobot's height is relative to its total length);
    those are known for every training task, where imagination happens.

    Example:
        >>> from envs import make_family
        >>> fam = make_family("acrobot")
        >>> tasks = fam.train_tasks(4, seed=0)
        >>> venv = fam.make_vector_env(tasks, seed=0)
        >>> obs, _ = venv.reset(seed=0)
        >>> obs.shape
        (4, 6)
    """

    name: ClassVar[str]
    env_id: ClassVar[str]
    env_class: ClassVar[type[gym.Env]]
    param_names: ClassVar[tuple[str, ...]]
    defaults: ClassVar[dict[str, float]]
    #: closed train range ``(low, high)`` of every parameter
    train_ranges: ClassVar[dict[str, tuple[float, float]]]
    obs_dim: ClassVar[int]
    act_dim: ClassVar[int]
    episode_length: ClassVar[int]

    @property
    def renders_offscreen(self) -> bool:
        """Can ``render_mode="rgb_array"`` run here without a display (for image strips)?"""
        return True

    # ---- tasks ---------------------------------------------------------------------------
    def make_task(self, name: str, split: str, **params: float) -> Task:
        """A validated :class:`Task`; parameters not given take their defaults."""
        full = dict(self.defaults)
        full.update(validate_params(f"{self.name} task {name!r}", params, self.param_names))
        return Task(self.name, name, split, full)

    def train_tasks(self, n: int, seed: int, design: str = TASK_DESIGN) -> list[Task]:
        """``n`` training tasks in :attr:`train_ranges`: ``design="uniform"``, parameters i.i.d. uniform;
        ``"sobol"``, the first points of a scrambled Sobol sequence (seeded by ``seed``), which spread
        over the box (16 points in 3 parameters: two in each octant, so no corner is left empty).

        The same ``(n, seed, design)`` always gives the same list; no task equals a test task.
        """
        if n < 1:
            raise ValueError(f"{self.name}: number of training tasks must be >= 1, got {n}")
        if design not in ("uniform", "sobol"):
            raise ValueError(f"{self.name}: task design {design!r}; expected 'uniform' or 'sobol'")
        rng = np.random.default_rng(seed)
        sobol = torch.quasirandom.SobolEngine(len(self.param_names), scramble=True, seed=seed)
        held_out = {t.params for t in self.test_tasks()}
        tasks: list[Task] = []
        while len(tasks) < n:
            unit = rng.uniform(size=len(self.param_names)) if design == "uniform" else sobol.draw(1)[0].double()
            values = {k: float(lo + (hi - lo) * u) for k, u in zip(self.param_names, unit.tolist(), strict=True)
                      for lo, hi in [self.train_ranges[k]]}  # fmt: skip
            task = self.make_task(f"train-{len(tasks):03d}", "train", **values)
            if task.params not in held_out:
                tasks.append(task)
        return tasks

    @abstractmethod
    def test_tasks(self) -> list[Task]:
        """Held-out tasks, each with split ``"interpolation"`` or ``"extrapolation"``."""

    def params_tensor(self, tasks: list[Task]) -> torch.Tensor:
        """Physics parameters of ``tasks`` as ``[T, P]`` float32, columns :attr:`param_names`."""
        return torch.stack([t.tensor(self.param_names) for t in tasks])

    def param(self, params: torch.Tensor, name: str) -> torch.Tensor:
        """The column ``name`` ``[...]`` of physics parameters ``params [..., P]``."""
        return params[..., self.param_names.index(name)]

    # ---- environments --------------------------------------------------------------------
    def make_env(self, task: Task, seed: int | None = None) -> gym.Env:
        """A ``gymnasium.Env`` of ``task`` with a ``TimeLimit`` of :attr:`episode_length`.

        With ``seed`` the env's RNG and action space are seeded (the env is reset once).
        """
        if task.family != self.name:
            raise ValueError(f"task {task.name!r} belongs to family {task.family!r}, not {self.name!r}")
        env = gym.make(self.env_id, disable_env_checker=True, **task.parameters)
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    def make_vector_env(
        self,
        tasks: list[Task],
        seed: int | None = None,
        autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP,
    ) -> gym.vector.SyncVectorEnv:
        """One env per task behind gymnasium's vector API: one policy call serves all tasks.

        Sub-env ``i`` runs ``tasks[i]``; with ``seed`` it is seeded with ``seed + i``.
        ``SAME_STEP`` autoreset (default) returns the reset observation at once and the last
        one in ``info["final_obs"]``, so every step yields a usable transition.
        """
        fns = [lambda t=t: self.make_env(t) for t in tasks]
        venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
        if seed is not None:
            venv.reset(seed=seed)
            venv.action_space.seed(seed)
        return venv

    # ---- exact batched reward and termination --------------------------------------------
    @abstractmethod
    def reward(
        self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """Reward ``[...]`` of transitions ``obs [..., O]``, ``action [..., A]``,
        ``next_obs [..., O]`` under physics ``params [..., P]`` (broadcast)."""

    def terminated(self, next_obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Boolean ``[...]``: does the episode end on arriving in ``next_obs``? Never, by default."""
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)

    def simulate(self, obs: torch.Tensor, action: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The env's own equations, batched in torch: the next observation ``[..., O]`` of ``obs
        [..., O]`` under ``action [..., A]`` with physics ``params [..., P]``, computed in float64 from
        the internal state the observation encodes; equals ``env.step`` to float32 precision (tests
        check it). What exact-model planners step (the ceiling, DESIGN §9).

        Raises:
            NotImplementedError: a family without a torch copy of its simulator (MuJoCo).
        """
        raise NotImplementedError(f"{self.name} has no batched torch simulator")

    def project(self, obs: torch.Tensor) -> torch.Tensor:
        """The nearest physical observation to an imagined ``obs [..., O]`` (e.g. cos/sin pairs back
        on the unit circle, velocities within the env's limits); identity where nothing is known."""
        return obs
