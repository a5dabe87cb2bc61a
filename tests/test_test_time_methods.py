"""The methods that work per test task on a trained GSSM: MPPI planning (GSSM-MPC) and the per-task
policy search (GSSM without amortization), on toy problems whose answer is known."""

from __future__ import annotations

import pytest
import torch
from test_model_error_control import train_toy
from test_toy_learning import LinearToyFamily, linear_tasks

import envs
from modules import APSModule, MetaDynamicsModel
from modules.methods.gssm_test_time.model_predictive_agent import ModelPredictiveAgent
from modules.methods.gssm_test_time.task_policy_search import TaskPolicySearch, stacked_mean_action
from modules.policies.mppi import MPPI, MPPISettings


class ReachZeroToyFamily(LinearToyFamily):
    """``Δs = w·a`` with the reward ``−|s'|``: the best action drives the state to 0."""

    name = "toy_reach"

    def reward(self, obs, action, next_obs, params):
        return -next_obs.abs().squeeze(-1)


def true_returns(w: float):
    """The exact return of action sequences ``[H, N, 1]`` in ``s' = s + w·a``, reward ``−|s'|``."""

    def returns(start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        states = start[None] + w * actions.cumsum(0)  # [H, N, 1]
        return -states.abs().sum((0, 2))

    return returns


def closed_loop_return(act, w: float, start: torch.Tensor, steps: int) -> float:
    s, total = start.clone(), torch.zeros(start.shape[0])
    for _ in range(steps):
        s = s + w * act(s).clamp(-1, 1)
        total -= s.abs().squeeze(-1)
    return float(total.mean())


def test_mppi_beats_random_actions_in_the_true_model():
    w, steps = 0.5, 10
    start = torch.randn(32, 1, generator=torch.Generator().manual_seed(0)) * 2
    g = torch.Generator().manual_seed(1)
    planner = MPPI(1, MPPISettings(horizon=8, samples=64, iterations=2, noise_std=0.5, temperature=0.1))
    mpc = closed_loop_return(lambda s: planner.plan(s, true_returns(w), g), w, start, steps)
    random = closed_loop_return(lambda s: torch.rand(s.shape, generator=g) * 2 - 1, w, start, steps)
    idle = closed_loop_return(torch.zeros_like, w, start, steps)
    assert mpc > idle + 0.5 * abs(idle) and mpc > random + 0.5 * abs(random), (mpc, idle, random)


def test_mppi_keeps_its_plan_as_a_warm_start_and_drops_it_for_a_new_batch():
    planner = MPPI(1, MPPISettings(horizon=4, samples=32))
    g = torch.Generator().manual_seed(0)
    planner.plan(torch.zeros(3, 1), true_returns(1.0), g)
    assert planner.mean_plan.shape == (3, 4, 1) and (planner.mean_plan[:, -1] == 0).all()  # shifted, 0 appended
    planner.plan(torch.zeros(5, 1), true_returns(1.0), g)
    assert planner.mean_plan.shape == (5, 4, 1)
    planner.reset()
    assert planner.mean_plan is None
    with pytest.raises(ValueError, match=r"MPPISettings.temperature: 0 — expected a number > 0"):
        MPPI(1, MPPISettings(temperature=0))


@pytest.fixture
def toy_model(monkeypatch) -> tuple[MetaDynamicsModel, LinearToyFamily]:
    monkeypatch.setitem(envs.FAMILIES, "toy_reach", ReachZeroToyFamily)
    torch.manual_seed(0)
    model = MetaDynamicsModel("toy_reach", hidden_dim=32, latent_dim=2, num_heads=2, lr=3e-3, prior_weight=0.0,
                              latent_decoder_weight=0.0, ensemble_size=1)  # fmt: skip
    return train_toy(model, linear_tasks(32, 100, seed=0), steps=150), ReachZeroToyFamily()


def test_the_model_predictive_agent_plans_each_task_in_its_own_context(toy_model):
    """Two tasks whose actions push the state in opposite directions (``w = ±1.5``): from ``s = 1``
    the plan of each task's rows must push toward 0 with that task's sign."""
    model, family = toy_model
    w = torch.tensor([1.5, -1.5])
    g = torch.Generator().manual_seed(3)
    obs, act = torch.randn(2, 30, 1, generator=g), torch.rand(2, 30, 1, generator=g) * 2 - 1
    cx, cy = torch.cat([obs, act], -1), w[:, None, None] * act
    agent = ModelPredictiveAgent(model, family, torch.zeros(2, 1), MPPI(1, MPPISettings(
        horizon=5, samples=128, iterations=2, temperature=0.1)))  # fmt: skip
    with pytest.raises(RuntimeError, match="before infer_latent"):
        agent.act(torch.zeros(2, 1), torch.zeros(2, 2))
    q = agent.infer_latent(cx, cy, torch.ones(2, 30, dtype=torch.bool))
    action = agent.act(torch.ones(4, 1), q.mean.repeat_interleave(2, 0))  # 2 tasks × 2 episodes, task-major
    assert (action[:2] < -0.2).all() and (action[2:] > 0.2).all(), action.flatten().tolist()
    assert agent.actions == 4 and agent.seconds > 0
    with pytest.raises(ValueError, match="expected 2 tasks"):
        agent.act(torch.ones(3, 1), torch.zeros(3, 2))
    agent.evaluation_policy(q.mean, episodes=2)
    assert agent.planner.mean_plan is None  # the context phase's plan is not the evaluation's warm start


def test_the_per_task_search_improves_the_imagined_return_of_one_task(toy_model):
    model, _ = toy_model
    buffer = linear_tasks(1, 50, seed=5)
    cx, cy = buffer.all_xy()
    aps = APSModule("toy_reach", latent_dim=2, hidden_dim=16, horizon=8, rollouts_per_task=64, context_size=20,
                    context_min=10, context_sets_per_task=4, ppo={"lr": 3e-3, "ppo_epochs": 4, "num_minibatches": 4},
                    min_action_std=0.0, latent="sample", next_state="sample", uncertainty_cut=None)  # fmt: skip
    search = TaskPolicySearch(model, aps, iterations=12, rollouts=128, init="scratch", seed=0)
    policy, returns = search.search(cx.view(50, 2), cy.view(50, 1), torch.zeros(1), task_index=0)
    first, last = sum(returns[:3]) / 3, sum(returns[-3:]) / 3
    assert last > first + 0.3 * abs(first), returns
    assert search.searches == 1 and search.seconds > 0
    assert not any(p is q for p, q in zip(policy.parameters(), aps.policy.parameters(), strict=True))


def test_stacked_policies_act_each_on_its_own_tasks_rows():
    torch.manual_seed(0)
    policies = [APSModule("acrobot", latent_dim=2, hidden_dim=8).policy for _ in range(3)]
    for p in policies:
        torch.nn.init.normal_(p.actor[-1].weight)  # tell them apart
    latent = torch.randn(3, 2)
    obs = torch.randn(6, 6)  # 3 tasks × 2 episodes
    act, _ = stacked_mean_action(policies, latent, episodes=2)(obs, 0, None)
    expected = torch.cat([policies[i].act(obs[2 * i : 2 * i + 2], latent[i].expand(2, -1), deterministic=True)
                          for i in range(3)])  # fmt: skip
    torch.testing.assert_close(act, expected)


def test_an_unknown_init_or_method_is_refused_by_name():
    aps = APSModule("acrobot", latent_dim=2, hidden_dim=8)
    with pytest.raises(ValueError, match="init='warm'"):
        TaskPolicySearch(MetaDynamicsModel("acrobot", hidden_dim=16, latent_dim=2), aps, init="warm")
    from modules.methods.gssm_test_time.test_time_method import GSSMTestTimeMethod

    with pytest.raises(ValueError, match="'gssm_plan'"):
        GSSMTestTimeMethod(method="gssm_plan", checkpoint="x.ckpt")
    with pytest.raises(ValueError, match=r"needs --model\.checkpoint"):
        GSSMTestTimeMethod(method="gssm_mpc")
    with pytest.raises(ValueError, match=r"trains nothing: metatest\.every_transitions=10 does not apply"):
        GSSMTestTimeMethod(checkpoint="x.ckpt", metatest={"every_transitions": 10})
