"""The Dyna loop under 2-process CPU DDP (gloo): consistent ranks, sharded work, one report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_runner import ROOT, run_cli

from datamodules import Transitions
from datamodules.sharding import gather_shards

TINY = str(ROOT / "tests/configs/tiny_dyna.yaml")
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_process_ddp_fit_then_test(tmp_path):
    probe = json.dumps({"class_path": "rank_probe.RankProbe", "init_args": {"out_dir": str(tmp_path / "probe")}})
    four_tasks = ["--data.num_train_tasks", "4"]
    run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, *DDP, *four_tasks,
            "--dyna.collect_tasks_per_iteration", "2", f"--trainer.callbacks+={probe}", timeout=400)  # fmt: skip
    ranks = [json.loads((tmp_path / f"probe/rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for key in ("gssm", "aps", "buffer"):
        assert ranks[0][key] == ranks[1][key], f"ranks hold different {key}"
    # 2 of the 4 tasks per iteration, one per rank (tasks 0 and 1, then 2 and 3): 40 random + one episode each
    assert ranks[0]["sizes"] == [40 + 200] * 4
    assert ranks[0]["streamed_tasks"] == [0, 2] and ranks[1]["streamed_tasks"] == [1, 3], "model batches sharded"
    log_dir = tmp_path / "runs/acrobot/fixed"
    report = json.loads((log_dir / "metatest.json").read_text())
    names = [r["task"] for r in report["tasks"] if r["method"] == "gssm_aps"]
    assert len(names) == len(set(names)) == 6, names  # every test task once, from both ranks' shards
    assert all(math.isfinite(r["return_mean"]) for r in report["tasks"])

    proc = run_cli(tmp_path, "test", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, *DDP, *four_tasks,
                   "--ckpt_path", str(log_dir / "checkpoints/last.ckpt"), timeout=400)  # fmt: skip
    assert "metatest/return_mean" in proc.stdout

    # a test-time method on the same checkpoint: each rank searches its shard's task policies
    run_cli(tmp_path, "test", "--config", str(ROOT / "conf/baselines/acrobot_gssm_nonamortized.yaml"), *DDP,
            "--model.checkpoint", str(log_dir / "checkpoints/last.ckpt"), "--model.metatest.episodes", "2",
            "--model.metatest.context", "5", "--model.search_iterations", "2", "--model.search_rollouts", "8",
            timeout=400)  # fmt: skip
    searched = tmp_path / "runs/gssm_nonamortized/acrobot/version_0"
    names = [r["task"] for r in json.loads((searched / "metatest.json").read_text())["tasks"]
             if r["method"] == "gssm_nonamortized"]  # fmt: skip
    assert len(names) == len(set(names)) == 6, names
    assert json.loads((searched / "test_compute.json").read_text())["time/test_seconds_per_task"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_more_ranks_than_training_tasks_fails_early_with_a_clear_message(tmp_path):
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
                   "--trainer.strategy", "ddp", "--trainer.devices", "4", "--trainer.accelerator", "cpu",
                   check=False, timeout=280)  # fmt: skip
    assert proc.returncode != 0
    assert "cannot shard 3 training tasks over 4 ranks" in proc.stdout + proc.stderr
    assert "Dyna iteration" not in proc.stdout + proc.stderr  # before any training
    assert not list(tmp_path.glob("runs/**/*.ckpt"))


class FakeAllGather:
    """all_gather over two simulated ranks whose padded shards are given up front."""

    def __init__(self, shards):
        self.shards, self.calls = shards, 0

    def __call__(self, tensor):
        out = torch.stack([fields[self.calls] for fields in self.shards])
        self.calls += 1
        return out


def fake_share(task_ids: list[int], width: int, steps: int) -> tuple[Transitions, list[torch.Tensor]]:
    """One simulated rank's collected transitions (obs of task ``k`` are all ``k``, so a gathered
    result shows where each row came from) and its fields zero-padded to ``width`` tasks for all_gather."""
    k = torch.tensor(task_ids, dtype=torch.float32).view(-1, 1, 1)
    t = Transitions(k.expand(-1, steps, 2), k.expand(-1, steps, 1), k[..., 0].expand(-1, steps),
                    k.expand(-1, steps, 2), torch.zeros(len(task_ids), steps, dtype=torch.bool))  # fmt: skip
    pad = lambda x: torch.cat([x, x.new_zeros(width - len(task_ids), *x.shape[1:])])  # noqa: E731
    return t, [pad(x) for x in (t.obs, t.action, t.reward, t.next_obs, t.done.float())]


def test_gathered_shards_put_every_task_exactly_once_in_task_order():
    (mine, fields0), (_, fields1) = fake_share([0, 2, 4], 3, 4), fake_share([1, 3], 3, 4)
    out = gather_shards(mine, num_tasks=5, world=2, all_gather=FakeAllGather([fields0, fields1]))
    assert out.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert out.reward.shape == (5, 4) and out.done.dtype == torch.bool


def test_gathered_shares_of_some_tasks_come_back_in_the_order_of_those_tasks():
    # rank 1 holds one task fewer than rank 0: padded for all_gather
    (mine, fields0), (_, fields1) = fake_share([2, 4], 2, 3), fake_share([5], 2, 3)
    out = gather_shards(mine, num_tasks=6, world=2, all_gather=FakeAllGather([fields0, fields1]),
                        tasks=torch.tensor([2, 4, 5]))  # fmt: skip
    assert out.obs[:, 0, 0].tolist() == [2.0, 4.0, 5.0]
