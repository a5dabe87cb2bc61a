"""`ScaleGridFamily`: task families whose tasks are (mass scale, damping scale) pairs on a grid."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch

from envs.family import TaskFamily
from envs.scaled_mujoco import ScaledMujocoEnv
from envs.task import Task


class ScaleGridFamily(TaskFamily):
    """Train tasks are the grid ``train_scales × train_scales`` of (mass, damping) scales;
    test tasks are ``interpolation_scales`` and, for each set of ``extrapolation_sets``, every
    (mass, damping) pair of that set (both scales outside the train range)."""

    param_names = ("damping_scale", "mass_scale")
    defaults = ScaledMujocoEnv.defaults
    train_scales: ClassVar[tuple[float, ...]]
    interpolation_scales: ClassVar[tuple[tuple[float, float], ...]]
    extrapolation_sets: ClassVar[tuple[tuple[float, ...], ...]]

    @property
    def renders_offscreen(self) -> bool:
        # MuJoCo needs an offscreen OpenGL backend; without one its renderer aborts the process
        return os.environ.get("MUJOCO_GL") in ("egl", "osmesa")

    @property
    def train_ranges(self) -> dict[str, tuple[float, float]]:
        lo, hi = min(self.train_scales), max(self.train_scales)
        return {"mass_scale": (lo, hi), "damping_scale": (lo, hi)}

    def train_tasks(self, n: int, seed: int) -> list[Task]:
        """``n`` distinct grid points in a seeded random order (all of them for ``n = len(grid)``)."""
        grid = [(m, d) for m in self.train_scales for d in self.train_scales]
        if not 1 <= n <= len(grid):
            raise ValueError(f"{self.name}: number of training tasks must be in [1, {len(grid)}] (the grid), got {n}")
        order = np.random.default_rng(seed).permutation(len(grid))[:n]
        return [
            self.make_task(
                f"train-m{grid[i][0]:g}-d{grid[i][1]:g}", "train", mass_scale=grid[i][0], damping_scale=grid[i][1]
            )
            for i in sorted(order)
        ]

    def terminated(self, next_obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """These locomotion tasks never terminate (a fallen humanoid just stops earning its bonus)."""
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)

    def test_tasks(self) -> list[Task]:
        tasks = [
            self.make_task(f"interp-m{m:g}-d{d:g}", "interpolation", mass_scale=m, damping_scale=d)
            for m, d in self.interpolation_scales
        ]
        for scales in self.extrapolation_sets:
            tasks += [
                self.make_task(f"extrap-m{m:g}-d{d:g}", "extrapolation", mass_scale=m, damping_scale=d)
                for m in scales
                for d in scales
            ]
        return tasks
