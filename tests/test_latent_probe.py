"""The latent probe benchmark: its task sampler, its R², and one probe of a tiny model end to end."""

from __future__ import annotations

import sys

import torch
from cli_runner import ROOT

import envs
from modules import APSModule, MetaDynamicsModel

sys.path.insert(0, str(ROOT / "benchmarks"))
from latent_probe import probe, r_squared, sample_probe_tasks


def test_probe_tasks_lie_inside_then_just_outside_the_training_ranges():
    fam = envs.make_family("cartpole_swingup")
    tasks = sample_probe_tasks(fam, 20, seed=5)
    assert len(tasks) == 40
    for task in tasks:
        for name, value in task.parameters.items():
            lo, hi = fam.train_ranges[name]
            width = hi - lo
            if task.split == "interpolation":
                assert lo <= value <= hi
            else:
                assert lo - 0.1 * width <= value < lo or hi < value <= hi + 0.1 * width
    assert tasks == sample_probe_tasks(fam, 20, seed=5)  # reproducible


def test_r_squared_is_one_for_a_linear_map_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    train, test = torch.arange(100), torch.arange(100, 200)
    assert abs(r_squared(x, 2 * x[:, 0] - x[:, 2] + 0.5, train, test) - 1) < 1e-9
    assert r_squared(x, torch.randn(200, generator=g, dtype=torch.float64), train, test) < 0.1


def test_probe_of_a_tiny_model_reports_every_parameter_and_the_swaps():
    torch.manual_seed(0)
    fam = envs.make_family("acrobot")
    model = MetaDynamicsModel("acrobot", hidden_dim=16, latent_dim=2, num_heads=2)
    model.x_normalizer.fit(torch.randn(100, 7))
    model.y_normalizer.fit(torch.randn(100, 6) * 0.1)
    policy = APSModule("acrobot", latent_dim=2, hidden_dim=8).policy
    result = probe(model, policy, fam, sample_probe_tasks(fam, 6, seed=1), n_context=5, seed=1)
    assert set(result["r2"]) == set(fam.param_names)
    assert all(set(v) == {"all", "inside", "outside"} for v in result["r2"].values())
    errors = result["one_step"]
    assert all(v > 0 for v in errors.values()) and set(errors) == {"own", "swapped_latent", "swapped_context"}
