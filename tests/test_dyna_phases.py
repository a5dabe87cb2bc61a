"""The Dyna loop's parts, each on its own: the policy, collection and meta-test phases of GSSM+APS,
the loop's progress and resume state, and the held-out early stop of the model's epoch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

import callbacks.dyna_state
from callbacks import HeldOutEarlyStopping, NormalizerFitting
from callbacks.dyna_state import DynaProgress
from datamodules import TransitionDataModule, Transitions
from modules import APSModule, MetaDynamicsModel
from modules.methods.gssm_aps.collection_phase import collect_with_policy
from modules.methods.gssm_aps.metatest_phase import meta_test_policy
from modules.methods.gssm_aps.policy_phase import fit_policy_in_model
from modules.policies.actor_critic import ActorCritic
from modules.policies.ppo import PPOSettings


def tiny_parts(env: str = "acrobot") -> tuple[TransitionDataModule, MetaDynamicsModel, APSModule]:
    """Two training tasks with 20 random steps each, a model whose normalisers are fitted on them, an APS."""
    torch.manual_seed(0)
    data = TransitionDataModule(env, num_train_tasks=2, random_steps_per_task=20, val_steps_per_task=0)
    model = MetaDynamicsModel(env, hidden_dim=8, latent_dim=2, num_heads=2, message_passing_rounds=1, ensemble_size=1)
    model.fit_normalizers(*data.model_training_data())
    aps = APSModule(env, latent_dim=2, hidden_dim=8, horizon=2, rollouts_per_task=4, context_size=8, context_min=2,
                    context_sets_per_task=2, ppo=PPOSettings(ppo_epochs=1, num_minibatches=1), min_action_std=0.0,
                    latent="sample", next_state="sample", uncertainty_cut=None)  # fmt: skip
    return data, model, aps


def test_the_policy_phase_trains_aps_in_the_frozen_model_and_hands_the_model_back_as_it_was():
    data, model, aps = tiny_parts()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    outer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    policy_before = [p.clone() for p in aps.policy.parameters()]
    metrics = fit_policy_in_model(aps, model, data, torch.tensor([1]), outer, epochs=2, max_grad_norm=0.5)
    assert aps.iterations == 2 and aps.source.task_ids.tolist() == [1]  # only this rank's shard is imagined
    assert metrics and all(k.startswith("policy/") for k in metrics) and "policy/imagined_reward_per_step" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, aps.policy.parameters(), strict=True))
    assert model.training  # eval mode only during the phase
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_the_collection_phase_steps_only_the_iterations_tasks_and_replays_the_same_on_a_resume():
    data, model, aps = tiny_parts()
    collected, returns = collect_with_policy(model, aps, data, torch.tensor([0]), steps_per_task=30, context_size=8,
                                             seed=3, iteration=2)  # fmt: skip
    assert collected.obs.shape == (1, 30, 6) and data.buffer.size.tolist() == [50, 20]
    torch.testing.assert_close(data.buffer.obs[0, 20:50], collected.obs[0])  # appended as returned
    assert returns.ndim == 1  # acrobot's episodes outlast 30 steps: none finished, none counted
    again = collect_with_policy(model, aps, tiny_parts()[0], torch.tensor([0]), 30, 8, seed=3, iteration=2)[0]
    later = collect_with_policy(model, aps, tiny_parts()[0], torch.tensor([0]), 30, 8, seed=3, iteration=3)[0]
    assert torch.equal(again.obs, collected.obs) and torch.equal(again.action, collected.action)
    assert not torch.equal(later.action, collected.action)  # each iteration its own draws


def test_the_meta_test_phase_reports_every_test_task_and_leaves_the_model_in_train_mode(family, tmp_path):
    model = MetaDynamicsModel("countdown", hidden_dim=8, latent_dim=2, num_heads=2)
    model.fit_normalizers(torch.randn(50, 2), torch.randn(50, 1))
    policy = ActorCritic(obs_dim=1, latent_dim=2, act_dim=1, hidden_dim=8)
    trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    scalars = meta_test_policy(trainer, model, policy, family, family.test_tasks(), seed=0, iteration=4,
                               real_transitions=720, context=3, episodes=2)  # fmt: skip
    assert model.training
    assert {"metatest/interpolation/reward_per_step", "metatest/extrapolation/random_reward_per_step",
            "metatest/task/short", "metatest/task/endless"} <= set(scalars)  # fmt: skip
    report = json.loads((tmp_path / "metatest.json").read_text())
    assert sorted({r["method"] for r in report["tasks"]}) == ["gssm_aps", "random"]
    assert "Dyna iteration 4, 720 real training transitions" in (tmp_path / "metatest.md").read_text()
    (line,) = (tmp_path / "metatest_history.jsonl").read_text().splitlines()
    assert json.loads(line)["real_transitions"] == 720


def test_the_progress_round_trips_through_a_checkpoint_and_a_resume_finishes_the_iteration(tmp_path, monkeypatch):
    _, _, aps = tiny_parts()
    progress = DynaProgress()
    progress.iteration, progress.real_transitions, progress.completed = 3, 1320, "policy"
    progress.metrics = {"time/model_seconds": 1.0, "policy/loss": 0.5}
    state = progress.state_dict(aps)  # the RNG state of this moment is saved with it
    expected_draw = torch.rand(3)
    (tmp_path / "metatest_history.jsonl").write_text(json.dumps({"real_transitions": 1920, "summary": {}}) + "\n")

    resumed, aps2 = DynaProgress(), tiny_parts()[2]
    resumed.load_state_dict(state, aps2)
    assert (resumed.iteration, resumed.real_transitions, resumed.completed) == (3, 1320, "policy")
    assert resumed.metrics == progress.metrics and aps2.iterations == aps.iterations
    assert all(torch.equal(a, b) for a, b in zip(aps.state_dict().values(), aps2.state_dict().values(), strict=True))
    draws, saved = [], []
    monkeypatch.setattr(callbacks.dyna_state, "save_last", lambda trainer: saved.append(torch.rand(1)))
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path), default_root_dir=str(tmp_path))
    resumed.resume(trainer, lambda: draws.append(torch.rand(3)))
    (finished,) = draws  # the phases left, from the checkpoint's RNG state
    torch.testing.assert_close(finished, expected_draw)
    assert (tmp_path / "metatest_history.jsonl").read_text() == ""  # beyond the checkpoint: dropped
    after_finish = torch.get_rng_state()
    torch.rand(5)  # what Lightning may draw before the pending save
    resumed.save_resumed_iteration(trainer)
    resumed.save_resumed_iteration(trainer)  # once only
    assert len(saved) == 1
    torch.set_rng_state(after_finish)
    torch.testing.assert_close(saved[0], torch.rand(1))  # saved with the state after the finished iteration


def test_an_iteration_counts_its_real_transitions_and_times_and_starts_the_next_one_empty():
    progress = DynaProgress()
    progress.start_model_phase(buffered=120)
    progress.end_model_phase()
    with progress.phase("collect", clock="collect"):
        pass
    data = Transitions(torch.zeros(2, 5, 3), torch.zeros(2, 5, 1), torch.ones(2, 5), torch.zeros(2, 5, 3),
                       torch.zeros(2, 5, dtype=torch.bool))  # fmt: skip
    progress.record_collection(data, torch.tensor([2.0, 4.0]))
    progress.record_metatest({"metatest/interpolation/reward_per_step": -0.5})
    metrics = progress.end_iteration()
    assert progress.real_transitions == 130 and metrics["real/transitions"] == 130.0
    assert metrics["real/episode_return"] == 3.0 and metrics["real/reward_per_step"] == 1.0
    assert metrics["time/iteration_seconds"] == metrics["time/model_seconds"] + metrics["time/collect_seconds"]
    assert metrics["time/total_seconds"] == progress.seconds_total == metrics["time/iteration_seconds"]
    assert progress.latest_metatest == (1, -0.5, None) and progress.completed == "iteration"
    assert progress.metrics == {}


class ScriptedModel:
    """A model whose held-out scores are given in advance."""

    def __init__(self, scores: list[float]):
        self.scores, self.checked = list(scores), 0

    def holdout_score(self, batches) -> float:
        self.checked += 1
        return self.scores.pop(0)


def test_the_held_out_early_stop_checks_every_k_batches_and_ends_the_stream_after_patience_bad_checks():
    ended = []
    data = SimpleNamespace(holdout_batches=lambda: ["held-out"], end_train_epoch=lambda: ended.append(True))
    trainer = SimpleNamespace(datamodule=data, global_step=0)
    stop = HeldOutEarlyStopping(check_every=2, patience=2)
    model = ScriptedModel([1.0, 0.5, 0.499, 0.6])  # 0.499 is not a 1% improvement on 0.5
    stop.on_train_epoch_start(trainer, model)
    for batch_idx in range(10):
        stop.on_train_batch_start(trainer, model, None, batch_idx)
        if ended:
            break
    assert batch_idx == 6 and model.checked == 4 and stop.best == 0.5 and stop.last == 0.6
    with pytest.raises(ValueError, match=r"HeldOutEarlyStopping.check_every: 0 — expected an integer ≥ 1"):
        HeldOutEarlyStopping(check_every=0)


def test_model_and_data_of_different_envs_are_refused_before_training():
    data = TransitionDataModule("cartpole_swingup", num_train_tasks=2)
    model = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2)
    with pytest.raises(ValueError, match=r"model.env='acrobot' .* but data.env='cartpole_swingup'"):
        NormalizerFitting().setup(SimpleNamespace(datamodule=data), model, "fit")


def test_a_model_trained_without_its_normalisers_fitted_is_refused_with_the_callback_to_add(tmp_path):
    data = TransitionDataModule("acrobot", num_train_tasks=2, random_steps_per_task=20, val_steps_per_task=0,
                                tasks_per_batch=2, context_min=2, context_max=8, num_targets=4, batches_per_epoch=1)
    model = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"not fitted: give the Trainer a callbacks\.NormalizerFitting"):
        trainer.fit(model, data)
