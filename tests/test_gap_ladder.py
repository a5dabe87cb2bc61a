"""The gap ladder (benchmarks/gap_ladder.py, DESIGN §9): rung a's policy search steps the exact
equations with the true physics as its latent, and every rung runs on a tiny model."""

from __future__ import annotations

import sys

import pytest
import torch
from cli_runner import ROOT

from envs import make_family
from modules import APSModule, MetaDynamicsModel
from modules.methods.gssm_aps.exact_policy_search import ExactDynamicsSearch, physics_code

sys.path.insert(0, str(ROOT / "benchmarks"))
from gap_ladder import RUNGS, LadderSettings, gap_ladder, scored, train_exact_search

pytestmark = [pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
              pytest.mark.filterwarnings("ignore:Your `IterableDataset` has `__len__` defined")]  # fmt: skip


def test_the_physics_code_spans_minus_one_to_one_over_the_training_ranges():
    fam = make_family("acrobot")
    low = torch.tensor([[fam.train_ranges[n][0] for n in fam.param_names]])
    high = torch.tensor([[fam.train_ranges[n][1] for n in fam.param_names]])
    assert torch.allclose(physics_code(fam, torch.cat([low, high, (low + high) / 2])),
                          torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3]))  # fmt: skip


@pytest.mark.parametrize("env", ["acrobot", "cartpole_swingup"])
def test_rung_a_rolls_out_the_exact_equations_of_each_task_with_its_physics_as_latent(env):
    fam = make_family(env)
    tasks = fam.train_tasks(3, seed=0)
    params = fam.params_tensor(tasks)
    start = torch.stack([torch.as_tensor(fam.make_env(t).reset(seed=i)[0]) for i, t in enumerate(tasks)])
    search = ExactDynamicsSearch(fam, params, start[:, None], horizon=4, rollouts_per_task=2, hidden_dim=8)
    r = search.prepare_iteration()
    rows = torch.arange(3).repeat_interleave(2)
    assert torch.equal(r.latent, physics_code(fam, params[rows]))
    assert torch.equal(r.obs[0], start[rows])
    for t in range(3):
        alive = r.alive[t + 1] > 0
        expected = fam.project(fam.simulate(r.obs[t], r.action[t].clamp(-1, 1), params[rows]).float())
        torch.testing.assert_close(r.obs[t + 1][alive], expected[alive])
    assert not r.disagreement.any() and not r.penalty.any()  # exact equations: no heads, no penalty


def test_every_rung_runs_on_a_tiny_model_and_the_default_task_keeps_its_own_latent():
    torch.manual_seed(0)
    fam = make_family("acrobot")
    model = MetaDynamicsModel("acrobot", hidden_dim=16, latent_dim=2, num_heads=2)
    model.x_normalizer.fit(torch.randn(100, 7))
    model.y_normalizer.fit(torch.randn(100, 6) * 0.1)
    aps = APSModule("acrobot", latent_dim=2, hidden_dim=8, horizon=3, rollouts_per_task=2, context_sets_per_task=1)
    train = fam.train_tasks(2, seed=0)
    start = torch.stack([torch.as_tensor(fam.make_env(t).reset(seed=0)[0]) for t in train])[:, None]
    exact = train_exact_search(fam, fam.params_tensor(train), start, dict(aps.hparams), iterations=1, seed=0)
    tasks = fam.test_tasks()[:3]
    assert tasks[0].name == "interp-default"
    settings = LadderSettings(episodes=1, context=3, large_context=6)
    ladder = gap_ladder(model, aps.policy, fam, tasks, exact, settings)
    assert set(ladder) == {*RUNGS, "random", "imagined_minus_real"}
    rewards = {k: v for k, v in ladder.items() if k != "imagined_minus_real"}
    assert all(len(v) == 3 and all(-1.0 <= x <= 1.0 for x in v) for v in rewards.values())
    assert ladder["d_wrong_latent"][0] == ladder["c_adaptation"][0]  # the donor task acts on its own latent
    result = scored(fam, tasks, ladder, settings.episodes)
    row = result["per_task"]["interp-heavy-long"]
    assert set(RUNGS) <= set(row) and "normalised_score" in row["c_adaptation"]  # the committed ceiling scores it
    assert gap_ladder(model, aps.policy, fam, tasks, exact, settings) == ladder  # seeded throughout
    assert result["raw"] == ladder  # kept, so a refined ceiling rescores it (--rescore)
