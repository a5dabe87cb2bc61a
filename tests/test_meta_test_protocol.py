"""The meta-test protocol (DESIGN §6) and the model-free learner's collection and budget, on a family
whose episodes end at a known step: a countdown that pays 1 per step and terminates when it hits 0."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.distributions import Normal

import envs
from envs import TaskFamily
from evaluation import TaskResult, collect_online_context, evaluation_returns, run_meta_test, split_means, summarise
from modules.model_free_ppo import ModelFreePPO

EPISODE = 8


class CountdownEnv(gym.Env):
    """``obs = [steps left]``; reward 1 per step; terminates after ``ceil(lifetime)`` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, lifetime: float):
        self.lifetime, self.left = lifetime, lifetime

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = self.lifetime
        return np.array([self.left], np.float32), {}

    def step(self, action):
        self.left -= 1.0
        return np.array([self.left], np.float32), 1.0, self.left <= 0, False, {}


class CountdownFamily(TaskFamily):
    name = "countdown"
    param_names = ("lifetime",)
    defaults = {"lifetime": 3.0}
    train_ranges = {"lifetime": (2.0, 6.0)}
    obs_dim = 1
    act_dim = 1
    episode_length = EPISODE

    def test_tasks(self):
        return [
            self.make_task("short", "interpolation", lifetime=3.0),
            self.make_task("middle", "interpolation", lifetime=5.0),
            self.make_task("endless", "extrapolation", lifetime=50.0),  # truncated by the time limit
        ]

    def make_env(self, task, seed=None):
        env = gym.wrappers.TimeLimit(CountdownEnv(task.parameters["lifetime"]), EPISODE)
        if seed is not None:
            env.reset(seed=seed)
        return env

    def reward(self, obs, action, next_obs, params):
        return torch.ones(obs.shape[:-1])

    def terminated(self, next_obs, params):
        return next_obs[..., 0] <= 0


class RecordingAgent(nn.Module):
    """Acts 0 and remembers the latents it was asked to act on."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.latents: list[torch.Tensor] = []

    def act(self, obs, latent, deterministic=False, generator=None):
        self.latents.append(latent.clone())
        return torch.zeros(obs.shape[0], 1)


@pytest.fixture
def family(monkeypatch):
    monkeypatch.setitem(envs.FAMILIES, "countdown", CountdownFamily)
    return CountdownFamily()


def test_returns_stop_at_termination_and_per_step_reward_divides_by_the_full_length(family):
    tasks = family.test_tasks()
    returns = evaluation_returns(family, tasks, episodes=2, seed=0, act_fn=lambda obs: np.zeros((len(obs), 1)))
    # the auto-reset envs go on paying 1 per step after a termination: none of it may count
    assert returns.tolist() == [[3.0, 3.0], [5.0, 5.0], [8.0, 8.0]]
    results = summarise("m", tasks, returns, EPISODE)
    assert [r.reward_per_step for r in results] == [3 / 8, 5 / 8, 1.0]
    first = results[0]
    assert (first.return_mean, first.return_std, first.episodes, first.latent) == (3.0, 0.0, 2, [])


def test_split_means_average_tasks_per_split_and_say_none_for_an_empty_split():
    def row(method, split, value):
        return TaskResult(method, "t", split, {}, 0.0, 0.0, value, 1, [])

    results = [row("m", "interpolation", 0.2), row("m", "interpolation", 0.4), row("m", "extrapolation", 1.0),
               row("random", "interpolation", 0.1)]  # fmt: skip
    means = split_means(results)
    assert means["m"] == pytest.approx({"interpolation": 0.3, "extrapolation": 1.0, "all": (0.2 + 0.4 + 1.0) / 3})
    assert means["random"] == {"interpolation": 0.1, "extrapolation": None, "all": 0.1}


def test_online_context_starts_at_the_prior_grows_one_step_at_a_time_and_records_true_transitions(family):
    tasks = family.test_tasks()[:2]  # lifetimes 3 and 5: both terminate (and auto-reset) within 6 steps
    agent, masks = RecordingAgent(), []

    def infer(cx, cy, mask):  # the latent is the context size, so the agent's inputs show what it saw
        masks.append(mask.clone())
        return Normal(mask.sum(1, keepdim=True).float(), torch.ones(len(mask), 1))

    cx, cy = collect_online_context(family, tasks, infer, agent, n_context=6, seed=0)
    assert [int(m.sum(1).max()) for m in masks] == [0, 1, 2, 3, 4, 5]  # the first action: the prior
    assert [float(z[0, 0]) for z in agent.latents] == [0, 1, 2, 3, 4, 5]
    # Δs is −1 on every step, the terminal ones too (the env's reset obs is not the next state)
    assert torch.equal(cy, torch.full((2, 6, 1), -1.0))
    assert cx[0, :, 0].tolist() == [3, 2, 1, 3, 2, 1]  # after the termination: the reset state


def test_run_meta_test_infers_the_latent_from_the_whole_context_and_tests_a_random_policy_too(family):
    agent = RecordingAgent()
    infer = lambda cx, cy, mask: Normal(mask.sum(1, keepdim=True).float(), torch.ones(len(mask), 1))  # noqa: E731
    results, latent = run_meta_test(family, family.test_tasks(), "m", agent, 3, seed=0, infer_latent=infer,
                                    n_context=4)  # fmt: skip
    assert latent.tolist() == [[4.0]] * 3
    assert {r.method for r in results} == {"m", "random"} and len(results) == 6
    assert torch.equal(agent.latents[-1], torch.full((9, 1), 4.0))  # the evaluation episodes: 3 tasks × 3
    no_latent, _ = run_meta_test(family, family.test_tasks(), "dr", RecordingAgent(), 1, seed=0)
    assert [r.latent for r in no_latent] == [[]] * 6


def test_model_free_collection_masks_after_termination_and_counts_only_live_steps(family):
    agent = ModelFreePPO(env="countdown", envs_per_iteration=4, num_train_tasks=3, hidden_dim=8)
    r = agent.collect_rollouts()
    lifetimes = [agent.train_tasks[i].parameters["lifetime"] for i in range(3)]
    lengths = r.alive.sum(0)
    assert set(lengths.tolist()) <= {float(math.ceil(x)) for x in lifetimes}
    assert agent.real_transitions == int(lengths.sum())
    for b, n in enumerate(lengths.long().tolist()):
        assert r.alive[:n, b].eq(1).all() and r.alive[n:, b].eq(0).all()
        assert torch.equal(r.reward[:, b], r.alive[:, b])  # 1 per live step, nothing after
        assert r.terminated[:, b].nonzero().flatten().tolist() == [n - 1]


def test_model_free_training_stops_at_the_iteration_that_spends_the_budget_then_meta_tests(family, tmp_path):
    agent = ModelFreePPO(env="countdown", real_transitions=30, envs_per_iteration=2, num_train_tasks=3,
                         hidden_dim=8, ppo={"ppo_epochs": 1, "num_minibatches": 2}, metatest_episodes=2,
                         metatest_context=3)  # fmt: skip
    trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(agent)
    assert agent._transitions_before < 30 <= agent.real_transitions  # stopped at the first iteration past it
    assert agent.iterations == trainer.current_epoch
    report = json.loads((tmp_path / "metatest.json").read_text())
    assert {row["task"] for row in report["tasks"]} == {"short", "middle", "endless"}
