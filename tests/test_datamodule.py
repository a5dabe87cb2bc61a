"""TransitionDataModule, ContextTargetStream and MultiTaskBuffer."""

from __future__ import annotations

import io

import pytest
import torch

from datamodules import ContextTargetStream, MultiTaskBuffer, TransitionDataModule, Transitions, shard_tasks


def small_dm(env: str = "acrobot", **kw) -> TransitionDataModule:
    args = dict(
        num_train_tasks=5,
        random_steps_per_task=60,
        val_steps_per_task=30,
        tasks_per_batch=2,
        context_min=3,
        context_max=8,
        num_targets=4,
        batches_per_epoch=7,
        val_batches=3,
    )
    args.update(kw)
    return TransitionDataModule(env, **args)


def test_two_ranks_yield_equal_batch_counts_from_disjoint_task_shards():
    dm = small_dm()
    dm.ensure_initial_data()
    seen, counts = [], []
    for rank in (0, 1):
        batches = list(dm.train_stream(rank, world_size=2))
        counts.append(len(batches))
        seen.append({int(i) for b in batches for i in b["task_index"]})
    assert counts == [7, 7]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] <= set(range(5))
    assert seen[0] <= {0, 2, 4} and seen[1] <= {1, 3}
    val_counts = [len(list(dm.val_stream(rank, world_size=2))) for rank in (0, 1)]
    assert val_counts == [3, 3]


def test_ranks_draw_different_batches_and_epochs_differ():
    dm = small_dm(num_train_tasks=2, tasks_per_batch=2)
    dm.ensure_initial_data()
    s0, s1 = dm.train_stream(0, 1), dm.train_stream(0, 1)
    first, again = next(iter(s0)), next(iter(s1))
    torch.testing.assert_close(first["target_x"], again["target_x"])  # same seed, same pass
    second_pass = next(iter(s0))
    assert not torch.equal(first["target_x"], second_pass["target_x"])
    # two ranks streaming the same tasks (as a test of the seeding) draw different batches
    ranks = [ContextTargetStream(dm.buffer, torch.arange(2), 1, 2, 2, 4, 3, seed=0, rank=r) for r in (0, 1)]
    rank0, rank1 = (next(iter(stream)) for stream in ranks)
    assert not torch.equal(rank0["target_x"], rank1["target_x"])


def test_more_ranks_than_tasks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cannot shard 3 training tasks over 4 ranks"):
        small_dm(num_train_tasks=3).train_stream(0, 4)
    assert shard_tasks(5, 1, 2).tolist() == [1, 3]


def test_batches_have_ragged_context_masks_and_the_right_shapes():
    dm = small_dm()
    sizes = set()
    for batch in dm.train_dataloader():
        assert batch["context_x"].shape == (2, 8, 7) and batch["context_y"].shape == (2, 8, 6)
        assert batch["target_x"].shape == (2, 4, 7) and batch["target_y"].shape == (2, 4, 6)
        n = batch["context_mask"].sum(1)
        assert ((n >= 3) & (n <= 8)).all()
        assert batch["context_mask"][:, :3].all()  # real points first, padding after
        sizes |= set(n.tolist())
    assert len(sizes) > 1
    val = next(iter(dm.val_dataloader()))
    assert val["extrapolation"].any() and (~val["extrapolation"]).any()
    assert val["context_mask"].all()


def test_state_dict_round_trip_restores_buffers_and_the_stream_position():
    dm = small_dm()
    loader = dm.train_dataloader()
    list(loader)  # one epoch consumed
    buf = io.BytesIO()
    torch.save(dm.state_dict(), buf)
    buf.seek(0)
    restored = small_dm(random_steps_per_task=1)  # would collect other data if it had to
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for name in ("obs", "action", "reward", "next_obs", "done", "size", "ptr"):
        assert torch.equal(getattr(dm.buffer, name), getattr(restored.buffer, name)), name
    x, y = dm.model_training_data()
    x2, y2 = restored.model_training_data()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    nxt, nxt_restored = next(iter(loader)), next(iter(restored.train_dataloader()))
    assert torch.equal(nxt["target_x"], nxt_restored["target_x"])


def test_state_from_another_env_is_a_clear_error():
    acro = small_dm("acrobot")
    acro.ensure_initial_data()
    with pytest.raises(ValueError, match=r"checkpoint data is for env 'acrobot'.*'cartpole_swingup'"):
        small_dm("cartpole_swingup").load_state_dict(acro.state_dict())


def test_transitions_of_the_wrong_feature_size_are_a_clear_error():
    dm = small_dm()
    k, n = 2, 5
    bad = Transitions(
        torch.zeros(k, n, 5),
        torch.zeros(k, n, 1),
        torch.zeros(k, n),
        torch.zeros(k, n, 5),
        torch.zeros(k, n, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match=r"obs has shape \(2, 5, 5\); expected \(2, 5, 6\)"):
        dm.add_transitions(torch.tensor([0, 1]), bad)
    nan = Transitions(
        torch.full((k, n, 6), float("nan")),
        torch.zeros(k, n, 1),
        torch.zeros(k, n),
        torch.zeros(k, n, 6),
        torch.zeros(k, n, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match=r"obs contains NaN"):
        dm.add_transitions(torch.tensor([0, 1]), nan)


def test_ring_buffer_keeps_the_newest_transitions():
    buf = MultiTaskBuffer(num_tasks=2, capacity=4, obs_dim=1, act_dim=1)
    for start in (0, 3):
        obs = torch.arange(start, start + 3, dtype=torch.float32).view(1, 3, 1).repeat(2, 1, 1)
        buf.add(torch.tensor([0, 1]), obs, obs, obs[..., 0], obs, torch.zeros(2, 3, dtype=torch.bool))
    assert buf.size.tolist() == [4, 4]
    assert sorted(buf.obs[0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    buf.add(
        torch.tensor([1]),
        torch.ones(1, 9, 1),
        torch.ones(1, 9, 1),
        torch.ones(1, 9),
        torch.ones(1, 9, 1),
        torch.zeros(1, 9, dtype=torch.bool),
    )
    assert buf.obs[1].eq(1).all() and buf.size.tolist() == [4, 4]


def test_stream_rejects_bad_sizes():
    buf = MultiTaskBuffer(1, 4, 1, 1)
    with pytest.raises(ValueError, match=r"context_min=5, context_max=3"):
        ContextTargetStream(buf, torch.arange(1), 1, 1, 5, 3, 1, seed=0)
