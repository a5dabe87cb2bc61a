"""The one learned-model env (`modules.models.model_env`): for each of its three next-state functions it
steps exactly as the hand-written step of that model (the separate envs it replaced), and M-DPILCO's
steps stay differentiable."""

from __future__ import annotations

import pytest
import torch

from common.sampling import sample_normal
from envs import make_family
from modules.models.adaptive_dynamics import AdaptiveDynamics
from modules.models.embedded_dynamics import EmbeddedDynamics
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.model_env import (
    ModelEnv,
    adaptive_dynamics_next_state,
    embedded_dynamics_next_state,
    meta_dynamics_next_state,
)

STEPS = 3


def assert_same_steps(env: ModelEnv, hand_step, start: torch.Tensor, actions: torch.Tensor) -> None:
    """``STEPS`` steps of ``env`` from ``start`` equal ``hand_step(obs, action) → (next_obs, reward,
    terminated, truncated, info)``, bit for bit."""
    assert torch.equal(env.reset(start), start)
    obs = start
    for action in actions:
        step = env.step(action)
        next_obs, reward, terminated, truncated, info = hand_step(obs, action)
        assert torch.equal(step.obs, next_obs) and torch.equal(step.next_obs, next_obs)
        assert torch.equal(step.reward, reward)
        assert torch.equal(step.terminated, terminated) and torch.equal(step.truncated, truncated)
        assert step.info.keys() == info.keys() and all(torch.equal(step.info[k], info[k]) for k in info)
        obs = next_obs


@pytest.mark.parametrize("sample_next", [False, True])
def test_the_meta_dynamics_step_keeps_the_context_groups_the_penalty_and_the_cut(sample_next):
    torch.manual_seed(0)
    family = make_family("acrobot")
    model = MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=4, ensemble_size=3).eval()
    params = family.params_tensor(family.train_tasks(2, seed=0)).repeat_interleave(3, 0)  # 2 sets × 3 rollouts
    encoding = model.infer_context(torch.randn(2, 5, 7), torch.randn(2, 5, 6))
    latent = torch.randn(6, 4)
    start, actions = family.project(torch.randn(6, 6)), torch.rand(STEPS, 6, 1) * 2 - 1
    penalty, cut = 0.5, 0.05
    ours, theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    next_state = meta_dynamics_next_state(model, encoding, latent, 3, sample_next, ours)
    env = ModelEnv(next_state, family, params, uncertainty_penalty=penalty, uncertainty_cut=cut)

    @torch.no_grad()
    def hand_step(obs, action):
        x = torch.cat([obs, action], -1).view(2, 3, -1)
        dist, disagreement = model.predict_with_disagreement(x, encoding, latent.view(2, 3, -1), sample_next, theirs)
        next_obs = family.project((sample_normal(dist, theirs) if sample_next else dist.mean).view(6, -1))
        disagreement = disagreement.view(6)
        terminated = family.terminated(next_obs, params)
        reward = family.reward(obs, action, next_obs, params) - penalty * disagreement
        truncated = (disagreement > cut) & ~terminated
        info = {"disagreement": disagreement, "penalty": penalty * disagreement}
        return next_obs, reward, terminated, truncated, info

    assert_same_steps(env, hand_step, start, actions)


def test_the_adaptive_dynamics_step_uses_each_environments_adapted_weights():
    torch.manual_seed(0)
    family = make_family("acrobot")
    model = AdaptiveDynamics(6, 1, hidden_dim=16)
    weights = model.adapt(torch.randn(2, 4, 7), torch.randn(2, 4, 6), torch.ones(2, 4, dtype=torch.bool))
    params = family.params_tensor(family.train_tasks(2, seed=0)).repeat_interleave(4, 0)  # 2 envs × 4 rows
    start, actions = family.project(torch.randn(8, 6)), torch.rand(STEPS, 8, 1) * 2 - 1
    env = ModelEnv(adaptive_dynamics_next_state(model, weights, 4), family, params)

    def hand_step(obs, action):
        x = torch.cat([obs, action], -1).view(2, 4, 7)
        next_obs = family.project(obs + model.predict(weights, x).view_as(obs))
        terminated = family.terminated(next_obs, params)
        reward = family.reward(obs, action, next_obs, params)
        return next_obs, reward, terminated, torch.zeros_like(terminated), {}

    assert_same_steps(env, hand_step, start, actions)


def test_the_embedded_dynamics_step_is_differentiable_and_keeps_each_particles_member():
    torch.manual_seed(0)
    family = make_family("cartpole_swingup")
    model = EmbeddedDynamics(5, 1, num_tasks=2, embedding_dim=2, members=3, hidden_dim=16)
    h, params = torch.randn(6, 2), family.params_tensor(family.train_tasks(6, seed=0))
    start = family.project(torch.randn(6, 5)).requires_grad_()
    actions = torch.rand(STEPS, 6, 1) * 2 - 1
    env = ModelEnv(embedded_dynamics_next_state(model, h), family, params)

    def hand_step(obs, action):
        x = torch.cat([obs, action], -1).view(3, 2, 6)
        next_obs = family.project(obs + model.delta_each(x, h.view(3, 2, 2)).reshape_as(obs))
        terminated = family.terminated(next_obs, params)
        reward = family.reward(obs, action, next_obs, params)
        return next_obs, reward, terminated, torch.zeros_like(terminated), {}

    assert_same_steps(env, hand_step, start, actions)
    env.reset(start)
    (grad,) = torch.autograd.grad(env.step(actions[0]).reward.sum(), start)  # nothing detached
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="6 particles do not split over 4"):
        embedded_dynamics_next_state(EmbeddedDynamics(5, 1, num_tasks=2, members=4, hidden_dim=8), h)


def test_a_penalty_or_cut_needs_a_model_with_heads():
    family = make_family("acrobot")
    env = ModelEnv(lambda obs, action: (obs, None), family, torch.ones(2, 4), uncertainty_cut=0.1)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(2, 1))
    env.reset(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="needs a next-state function with heads"):
        env.step(torch.zeros(2, 1))
