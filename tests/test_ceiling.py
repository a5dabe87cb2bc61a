"""The exact-model ceiling (benchmarks/ceiling.py, DESIGN §9): the planner's objective, that it controls, and
how the planner and the exact-trained policy combine."""

from __future__ import annotations

import sys

import numpy as np
import torch
from cli_runner import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from ceiling import GuideSettings, PlannerSettings, acrobot_energy_gap, exact_planner, measure, per_step

from envs import make_family
from evaluation.protocol import uniform_random_policy


def test_the_energy_gap_is_conserved_without_torque_and_zero_resting_upright():
    fam = make_family("acrobot")
    task = fam.test_tasks()[1]
    params = fam.params_tensor([task])[0]
    env = fam.make_env(task)
    obs, _ = env.reset(seed=0)
    gaps = []
    for _ in range(30):
        gaps.append(float(acrobot_energy_gap(torch.as_tensor(obs), params)))
        obs, *_ = env.step(np.zeros(1, dtype=np.float32))
    assert max(gaps) - min(gaps) < 1e-4 and abs(gaps[0] - 2.0) < 0.01  # hanging at rest: E = −E_top
    upright = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # θ1 = π, θ2 = 0, at rest
    assert float(acrobot_energy_gap(upright, params)) < 1e-9


def test_the_exact_planner_swings_the_cartpole_up_where_a_random_policy_does_not():
    fam = make_family("cartpole_swingup")
    tasks = fam.test_tasks()[:1]
    settings = PlannerSettings(horizon=25, samples=64, iterations=1, noise_std=0.5, temperature=0.3)
    planned = per_step(fam, tasks, 1, 0, exact_planner(fam, fam.params_tensor(tasks), 1, settings, seed=0))
    random = per_step(fam, tasks, 1, 0, uniform_random_policy(fam.act_dim, 0))
    assert planned[0] > random[0] + 0.3, (planned, random)


def test_with_a_policy_the_ceiling_and_floor_are_per_task_the_better_controller_and_doubling_doubles_both():
    torch.manual_seed(0)
    planner = PlannerSettings(horizon=4, samples=8, iterations=1, noise_std=0.5, temperature=0.3)
    guide = GuideSettings(iterations=2, horizon=4, rollouts_per_task=4, start_steps=10)
    result = measure("cartpole_swingup", "train", 1, 0, planner, guide, doubling=True)
    assert result["guide"]["iterations"] == 2 and set(result["seconds"]) == {
        f"{run}_{controller}" for run in ("ceiling", "floor", "ceiling_doubled") for controller in ("mppi", "policy")}
    for row in result["per_task"].values():
        for run in ("ceiling", "floor", "ceiling_doubled"):
            assert row[run] == max(row[f"{run}_mppi"], row[f"{run}_policy"])
        assert row["doubling_gain"] == row["ceiling_doubled"] - row["ceiling"]
    assert len({row["ceiling_policy"] for row in result["per_task"].values()}) > 1  # it acts on each task
