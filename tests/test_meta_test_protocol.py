"""The meta-test protocol (DESIGN §6) and the model-free learner's collection and budget, on the
countdown family (``tests/countdown.py``: episodes end at a known step)."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from countdown import EPISODE, RecordingAgent
from torch.distributions import Normal

from envs.rollout import agent_policy
from evaluation import TaskResult, collect_online_context, evaluation_returns, run_meta_test, split_means, summarise
from modules.methods.model_free_ppo import ModelFreePPO


def test_returns_stop_at_termination_and_per_step_reward_divides_by_the_full_length(family):
    tasks = family.test_tasks()
    policy = agent_policy(RecordingAgent(), torch.zeros(6, 0))
    returns = evaluation_returns(family, tasks, episodes=2, seed=0, policy=policy)
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
    _, zero_shot = run_meta_test(family, family.test_tasks(), "m", agent, 1, seed=0, infer_latent=infer, n_context=0)
    assert zero_shot.tolist() == [[0.0]] * 3  # no context: the prior's latent


def test_model_free_collection_masks_after_termination_and_counts_only_live_steps(family):
    agent = ModelFreePPO(env="countdown", envs_per_iteration=4, budget={"num_train_tasks": 3}, hidden_dim=8)
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
    agent = ModelFreePPO(env="countdown", budget={"real_transitions": 30, "num_train_tasks": 3}, envs_per_iteration=2,
                         hidden_dim=8, ppo={"ppo_epochs": 1, "num_minibatches": 2},
                         metatest={"episodes": 2, "context": 3})  # fmt: skip
    trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(agent)
    assert agent._transitions_before < 30 <= agent.real_transitions  # stopped at the first iteration past it
    assert agent.iterations == trainer.current_epoch
    report = json.loads((tmp_path / "metatest.json").read_text())
    assert {row["task"] for row in report["tasks"]} == {"short", "middle", "endless"}
