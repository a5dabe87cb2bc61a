"""`ScaleGridFamily`: task families whose tasks are (mass scale, damping scale) pairs on grids.

The grids are the paper's MuJoCo protocol (DESIGN §5): train on {0.8, 0.9, 1.0, 1.1, 1.2}², test
interpolation on the 4 × 4 grid between, {0.85, 0.95, 1.05, 1.15}², and extrapolation on CaDM's
out-of-range sets, each set crossed with itself (a family's :attr:`extrapolation_sets`).
"""

from __future__ import annotations

import itertools
import os
from typing import ClassVar

import numpy as np
import torch

from envs.family import TASK_DESIGN, TaskFamily
from envs.scaled_mujoco import ScaledMujocoEnv
from envs.task import Split, Task


class ScaleGridFamily(TaskFamily):
    """Train tasks are the grid ``train_scales²`` of (mass, damping) scales; test tasks are the
    grid ``interpolation_scales²`` and, for each set of ``extrapolation_sets``, every (mass,
    damping) pair of that set (both scales outside the train range)."""

    param_names = ("damping_scale", "mass_scale")
    defaults = ScaledMujocoEnv.defaults
    env_class: ClassVar[type[ScaledMujocoEnv]]
    episode_length = 1000  # gymnasium's MuJoCo locomotion episode
    train_scales: ClassVar[tuple[float, ...]] = (0.8, 0.9, 1.0, 1.1, 1.2)
    interpolation_scales: ClassVar[tuple[float, ...]] = (0.85, 0.95, 1.05, 1.15)
    extrapolation_sets: ClassVar[tuple[tuple[float, ...], ...]]

    @property
    def renders_offscreen(self) -> bool:
        # MuJoCo needs an offscreen OpenGL backend; without one its renderer aborts the process
        return os.environ.get("MUJOCO_GL") in ("egl", "osmesa")

    @property
    def train_ranges(self) -> dict[str, tuple[float, float]]:
        lo, hi = min(self.train_scales), max(self.train_scales)
        return {"mass_scale": (lo, hi), "damping_scale": (lo, hi)}

    def _grid(self, prefix: str, split: Split, scales: tuple[float, ...]) -> list[Task]:
        """Every (mass, damping) pair of ``scales`` as a task, mass-major."""
        return [
            self.make_task(f"{prefix}-m{m:g}-d{d:g}", split, mass_scale=m, damping_scale=d)
            for m, d in itertools.product(scales, scales)
        ]

    def train_tasks(self, n: int, seed: int, design: str = TASK_DESIGN) -> list[Task]:
        """``n`` distinct grid points (all of them for ``n = len(grid)``): a seeded random subset
        (``design="uniform"``) or, for ``"sobol"``, the free grid point nearest to each of the first
        ``n`` points of a scrambled Sobol sequence in turn (a subset spread over the grid)."""
        if design not in ("uniform", "sobol"):
            raise ValueError(f"{self.name}: task design {design!r}; expected 'uniform' or 'sobol'")
        grid = self._grid("train", "train", self.train_scales)
        if not 1 <= n <= len(grid):
            raise ValueError(f"{self.name}: number of training tasks must be in [1, {len(grid)}] (the grid), got {n}")
        if design == "uniform":
            return [grid[i] for i in sorted(np.random.default_rng(seed).permutation(len(grid))[:n])]
        low, high = min(self.train_scales), max(self.train_scales)
        points = (self.params_tensor(grid).double() - low) / (high - low)  # [G, 2] in the unit square
        free = torch.ones(len(grid), dtype=torch.bool)
        for u in torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(n).double():  # n ≤ 25 tasks, once
            free[torch.where(free, (points - u).norm(dim=1), torch.inf).argmin()] = False
        return [task for task, taken in zip(grid, (~free).tolist(), strict=True) if taken]

    def test_tasks(self) -> list[Task]:
        tasks = self._grid("interp", "interpolation", self.interpolation_scales)
        for scales in self.extrapolation_sets:
            tasks += self._grid("extrap", "extrapolation", scales)
        return tasks

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, params: torch.Tensor):
        return self.env_class.step_reward(next_obs, self.env_class.ctrl_range * action)
