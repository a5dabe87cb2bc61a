"""The one rollout loop (`envs.rollout`) on real envs and on the learned model (`modules.models.model_env`)."""

from __future__ import annotations

import pytest
import torch
from countdown import RecordingAgent

from envs import make_family
from envs.rollout import TaskVectorEnv, agent_policy, random_policy, rollout
from modules.models.meta_dynamics_model import MetaDynamicsModel
from modules.models.model_env import ModelEnv, meta_dynamics_next_state


def test_an_episodic_rollout_stops_counting_at_the_first_end(family):
    tasks = family.test_tasks()  # lifetimes 3, 5 and 50 (truncated by the 8-step limit)
    env = TaskVectorEnv(family, tasks, seed=0)
    traj = rollout(env, agent_policy(RecordingAgent(), torch.zeros(3, 0)), env.reset(), steps=10)
    assert traj.alive.sum(0).tolist() == [3.0, 5.0, 8.0]
    assert torch.equal(traj.reward, traj.alive.double())  # 1 per live step, nothing after the end
    assert traj.terminated.nonzero().tolist() == [[2, 0], [4, 1]]  # each end flagged once, never after
    assert traj.truncated.nonzero().tolist() == [[7, 2]]
    with pytest.raises(ValueError, match="steps >= 1, got 0"):
        rollout(env, agent_policy(RecordingAgent(), torch.zeros(3, 0)), env.reset(), steps=0)


def test_a_continuing_rollout_runs_through_resets_and_records_true_next_states(family):
    env = TaskVectorEnv(family, family.test_tasks()[:1], seed=0)  # lifetime 3
    traj = rollout(env, agent_policy(RecordingAgent(), torch.zeros(1, 0)), env.reset(), steps=7, episodic=False)
    assert traj.alive.eq(1).all()
    assert traj.obs[:, 0, 0].tolist() == [3, 2, 1, 3, 2, 1, 3]  # the env reset itself after each end
    assert traj.next_obs[:, 0, 0].tolist() == [2, 1, 0, 2, 1, 0, 2]  # but the transition keeps the final state
    assert traj.episode_returns() == [[3.0, 3.0]]  # two finished episodes; the third still runs


def test_the_policy_sees_the_steps_so_far_and_its_extras_are_recorded(family):
    env = TaskVectorEnv(family, family.test_tasks()[1:2], seed=0)  # lifetime 5
    seen = []

    def policy(obs, t, trajectory):
        if t > 0:
            seen.append(trajectory.obs[:, 0, 0].tolist())
        return torch.full((1, 1), 5.0), {"step": torch.tensor([float(t)])}

    traj = rollout(env, policy, env.reset(), steps=3)
    assert seen == [[5, 0, 0], [5, 4, 0]]  # rows not yet stepped are zeros
    assert traj.info["step"][:, 0].tolist() == [0, 1, 2]
    assert traj.action[:, 0, 0].tolist() == [5.0] * 3  # recorded as returned; the env got it clipped


def test_a_model_env_steps_with_the_exact_reward_penalty_and_cut():
    family = make_family("acrobot")
    model = MetaDynamicsModel(env="acrobot", hidden_dim=16, latent_dim=4, ensemble_size=3).eval()
    tasks = family.train_tasks(2, seed=0)
    params = family.params_tensor(tasks).repeat_interleave(4, 0)  # 2 context sets × 4 rollouts
    encoding = model.infer_context(torch.randn(2, 5, 7), torch.randn(2, 5, 6))
    latent = encoding.q_zc.mean.repeat_interleave(4, 0)
    next_state = meta_dynamics_next_state(model, encoding, latent, rollouts_per_context=4)
    env = ModelEnv(next_state, family, params, uncertainty_penalty=0.5, uncertainty_cut=0.0)
    start = torch.randn(8, 6)
    action = torch.rand(8, 1) * 2 - 1
    env.reset(start)
    step = env.step(action)
    exact = family.reward(start, action, step.next_obs, params)
    assert torch.allclose(step.reward, exact - 0.5 * step.info["disagreement"])
    assert torch.equal(step.info["penalty"], 0.5 * step.info["disagreement"])
    assert step.truncated.all()  # three random heads always disagree a little: every step is past a 0 cut
    cos, sin = step.next_obs[:, 0], step.next_obs[:, 1]
    assert torch.allclose(cos**2 + sin**2, torch.ones(8), atol=1e-5)  # projected back onto the circle
    with pytest.raises(ValueError, match="rollouts_per_context=3"):
        meta_dynamics_next_state(model, encoding, latent, rollouts_per_context=3)


def test_random_policy_draws_from_its_generator():
    a = random_policy(2, torch.Generator().manual_seed(0))(torch.zeros(4, 3), 0, None)[0]
    b = random_policy(2, torch.Generator().manual_seed(0))(torch.zeros(4, 3), 0, None)[0]
    assert torch.equal(a, b) and a.shape == (4, 2) and a.abs().max() <= 1
