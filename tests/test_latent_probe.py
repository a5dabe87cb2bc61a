"""The latent probe benchmark: its task sampler, its split and swap, its R², and one probe of a tiny model."""

from __future__ import annotations

import sys

import pytest
import torch
from cli_runner import ROOT

import envs
from modules import APSModule, MetaDynamicsModel

sys.path.insert(0, str(ROOT / "benchmarks"))
from latent_probe import (
    collect_probe_data,
    derangement,
    probe,
    probe_r2,
    r_squared,
    sample_probe_tasks,
    stratified_halves,
)


@pytest.mark.parametrize("env", ["acrobot", "cartpole_swingup"])
def test_probe_tasks_lie_inside_then_just_outside_the_training_ranges(env):
    fam = envs.make_family(env)
    tasks = sample_probe_tasks(fam, 20, seed=5)
    assert len(tasks) == 40
    assert [t.split for t in tasks] == ["interpolation"] * 20 + ["extrapolation"] * 20
    edges = set()
    for task in tasks:
        for name in fam.param_names:
            value = task.parameters[name]
            lo, hi = fam.train_ranges[name]
            width = hi - lo
            if task.split == "interpolation":
                assert lo <= value <= hi
            else:
                assert lo - 0.1 * width <= value < lo or hi < value <= hi + 0.1 * width
                edges.add(value > hi)
    assert edges == {False, True}  # both edges are drawn
    assert not {t.params for t in tasks} & {t.params for t in fam.test_tasks()}
    assert tasks == sample_probe_tasks(fam, 20, seed=5)  # reproducible
    assert tasks != sample_probe_tasks(fam, 20, seed=6)


def test_halves_are_stratified_and_the_swap_is_a_derangement():
    inside = torch.arange(30) < 12
    train, test = stratified_halves(inside, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([train, test]).tolist()) == list(range(30))
    assert (int(inside[train].sum()), int(inside[test].sum())) == (6, 6)
    assert (int((~inside[train]).sum()), int((~inside[test]).sum())) == (9, 9)
    for t in (2, 3, 17):
        other = derangement(t, torch.Generator().manual_seed(t))
        assert sorted(other.tolist()) == list(range(t)) and not (other == torch.arange(t)).any()


def test_r_squared_is_one_for_a_linear_map_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    train, test = torch.arange(100), torch.arange(100, 200)
    assert abs(r_squared(x, 2 * x[:, 0] - x[:, 2] + 0.5, train, test) - 1) < 1e-9
    assert r_squared(x, torch.randn(200, generator=g, dtype=torch.float64), train, test) < 0.1


def test_a_latent_linear_in_the_parameters_probes_to_r2_one_and_noise_does_not():
    fam = envs.make_family("acrobot")
    tasks = sample_probe_tasks(fam, 16, seed=3)
    params = fam.params_tensor(tasks)
    inside = torch.tensor([t.split == "interpolation" for t in tasks])
    g = torch.Generator().manual_seed(0)
    latent = params @ torch.randn(3, 4, generator=g) + torch.randn(4, generator=g)  # Z = 4 ≥ P = 3
    r2 = probe_r2(latent, params, inside, fam.param_names, seed=1)
    assert set(r2) == set(fam.param_names)
    for scores in r2.values():
        assert all(abs(v - 1) < 1e-6 for v in scores.values()), scores
    noise = probe_r2(torch.randn(32, 4, generator=g), params, inside, fam.param_names, seed=1)
    assert all(s["all"] < 0.5 for s in noise.values()), noise


def test_probe_of_a_tiny_model_reports_every_parameter_and_the_swaps():
    torch.manual_seed(0)
    fam = envs.make_family("acrobot")
    model = MetaDynamicsModel("acrobot", hidden_dim=16, latent_dim=2, num_heads=2)
    model.x_normalizer.fit(torch.randn(100, 7))
    model.y_normalizer.fit(torch.randn(100, 6) * 0.1)
    policy = APSModule("acrobot", latent_dim=2, hidden_dim=8).policy
    tasks = sample_probe_tasks(fam, 6, seed=1)
    data = collect_probe_data(model, policy, fam, tasks, n_context=5, seed=1)
    assert data["latent"].shape == (12, 2)
    assert data["cx"].shape == data["tx"].shape == (12, 5, fam.obs_dim + fam.act_dim)
    assert data["cy"].shape == data["ty"].shape == (12, 5, fam.obs_dim)
    assert not torch.equal(data["cx"], data["tx"])  # the targets are a second, independent set
    result = probe(model, policy, fam, tasks, n_context=5, seed=1)
    assert (result["n_inside"], result["n_outside"], result["latent_dim"]) == (6, 6, 2)
    assert set(result["r2"]) == set(fam.param_names)
    assert all(set(v) == {"all", "inside", "outside"} for v in result["r2"].values())
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in result["r2"].values())
    errors = result["one_step"]
    assert set(errors) == {"own", "swapped_latent", "swapped_context", "latent_ratio", "context_ratio"}
    assert all(v > 0 for v in errors.values())
    assert errors["swapped_latent"] != errors["own"]  # the swap reaches the prediction
    assert errors["latent_ratio"] == pytest.approx(errors["swapped_latent"] / errors["own"])
    again = probe(model, policy, fam, tasks, n_context=5, seed=1)  # seeded throughout
    assert again["one_step"] == errors
    for name, scores in result["r2"].items():  # LAPACK's least squares may differ in the last bits
        assert again["r2"][name] == pytest.approx(scores, rel=1e-9)


def test_the_set_encoder_recovers_a_parameter_the_contexts_reveal_and_not_one_they_hide():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from identifiability import r2_max

    g = torch.Generator().manual_seed(0)
    t, n = 400, 20
    params = torch.rand(t, 2, generator=g) + 0.5  # column 0 scales the response, column 1 never shows
    x = torch.randn(t, n, 1, generator=g)
    sets = torch.cat([x, params[:, None, :1] * x], -1)  # y = p0 · x
    r2 = r2_max(sets[:300], params[:300], sets[300:], params[300:], ["shown", "hidden"],
                seed=0, steps=400, hidden_dim=32)  # fmt: skip
    assert r2["shown"] > 0.9 and r2["hidden"] < 0.2, r2
