"""The finer Dyna schedule: ``collect_tasks_per_iteration`` collects the training tasks round robin."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from callbacks import DynaLoop, NormalizerFitting
from datamodules import TransitionDataModule
from datamodules.sharding import round_robin_tasks
from modules import APSModule, MetaDynamicsModel
from modules.methods.gssm_aps.collection_phase import check_collection_schedule
from modules.methods.settings import MetaTestSettings
from modules.policies.ppo import PPOSettings


def test_every_task_gets_the_same_number_of_episodes_round_robin():
    assert [round_robin_tasks(i, 8, 16).tolist() for i in (1, 2, 3)] == [
        list(range(8)), list(range(8, 16)), list(range(8))]  # fmt: skip
    picks = torch.cat([round_robin_tasks(i, 2, 5) for i in range(1, 6)])  # 10 episodes over 5 tasks
    assert torch.bincount(picks).tolist() == [2] * 5
    assert round_robin_tasks(4, 2, 5).tolist() == [1, 2]  # sorted, wrapped past the last task
    assert round_robin_tasks(3, None, 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("per_iteration", "world", "message"),
    [(0, 1, "expected 1..16"), (17, 1, "expected 1..16"), (6, 4, "multiples of the number of ranks")],
)
def test_a_schedule_that_cannot_be_collected_is_refused_with_its_value(per_iteration, world, message):
    with pytest.raises(ValueError, match=message) as err:
        check_collection_schedule(per_iteration, 16, world)
    assert f"collect_tasks_per_iteration={per_iteration}" in str(err.value)
    check_collection_schedule(8, 16, 4)  # 2 tasks per rank: fine


def test_the_loop_adds_episodes_only_to_the_tasks_of_the_iteration(tmp_path):
    torch.manual_seed(0)
    data = TransitionDataModule(env="acrobot", num_train_tasks=3, random_steps_per_task=20, val_steps_per_task=10,
                                tasks_per_batch=2, context_min=2, context_max=8, num_targets=4, batches_per_epoch=2,
                                val_batches=1)  # fmt: skip
    model = MetaDynamicsModel("acrobot", hidden_dim=8, latent_dim=2, num_heads=2, message_passing_rounds=1,
                              ensemble_size=2)  # fmt: skip
    policy = partial(APSModule, hidden_dim=8, horizon=2, rollouts_per_task=4, context_min=2,
                     context_sets_per_task=2, ppo=PPOSettings(ppo_epochs=1, num_minibatches=1))  # fmt: skip
    loop = DynaLoop(policy, policy_epochs=1, collect_steps_per_task=30, collect_tasks_per_iteration=2,
                    metatest=MetaTestSettings(context=2, episodes=1, tasks=["interp-default"]))  # fmt: skip
    pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
               callbacks=[NormalizerFitting(refit_every_epoch=False), loop],
               default_root_dir=tmp_path).fit(model, data)  # fmt: skip
    # iteration 1 collects tasks 0 and 1, iteration 2 tasks 2 and 0
    assert data.buffer.size.tolist() == [20 + 2 * 30, 20 + 30, 20 + 30]
    assert loop.progress.real_transitions == 3 * 20 + 4 * 30
