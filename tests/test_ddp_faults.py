"""A NaN loss on one DDP rank stops every rank with the same note, and nothing hangs (DESIGN §4.5, §4.6)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from cli_runner import ROOT, run_cli
from test_ddp import DDP, TINY

from common.finite_loss import require_finite_loss
from envs import make_family
from modules.methods.gssm_aps.exact_policy_search import ExactDynamicsSearch


def rank_0_of_two(monkeypatch, other_rank: list[float]) -> SimpleNamespace:
    """A module on rank 0 of a two-rank trainer; the all_gather brings rank 1's ``other_rank`` values."""

    def all_gather(out: list[torch.Tensor], mine: torch.Tensor) -> None:
        out[0].copy_(mine)
        out[1].copy_(torch.tensor(other_rank))

    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    trainer = SimpleNamespace(world_size=2)
    return SimpleNamespace(_trainer=trainer, trainer=trainer)


def test_every_rank_raises_the_same_message_naming_the_ranks_that_saw_it(monkeypatch):
    finite, nan, inf = torch.tensor(0.5), torch.tensor(float("nan")), torch.tensor(float("inf"))
    require_finite_loss(rank_0_of_two(monkeypatch, [1.0]), finite, "PPO loss", "at policy iteration 2")
    with pytest.raises(FloatingPointError, match=r"^PPO loss is nan at policy iteration 2 on rank 1 of 2$"):
        require_finite_loss(rank_0_of_two(monkeypatch, [float("nan")]), finite, "PPO loss", "at policy iteration 2")
    with pytest.raises(FloatingPointError, match=r"^model loss is inf at step 4 on ranks 0, 1 of 2 \(kl 3.0\); see$"):
        require_finite_loss(rank_0_of_two(monkeypatch, [float("nan"), 1.0]), inf, "model loss", "at step 4",
                            {"kl": torch.tensor(3.0)}, "see")  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"^L2A meta-loss is nan at iteration 1$"):
        require_finite_loss(SimpleNamespace(_trainer=None), nan, "L2A meta-loss", "at iteration 1")  # stepped by hand


def test_non_finite_rollout_states_on_one_rank_stop_every_rank_before_any_other_collective(monkeypatch):
    fam = make_family("acrobot")
    params = fam.params_tensor(fam.train_tasks(2, seed=0))
    search = ExactDynamicsSearch(fam, params, torch.zeros(2, 5, 6), horizon=3, rollouts_per_task=4, hidden_dim=8)
    search.prepare_iteration()  # finite states, one process: no collective, no error
    search._trainer = rank_0_of_two(monkeypatch, [float("nan"), 2.0]).trainer  # rank 1's state 2 is NaN
    with pytest.raises(FloatingPointError, match=r"^the largest rollout state is nan at policy iteration 1 on "
                                                 r"rank 1 of 2 \(first non-finite state 2.0\)$"):  # fmt: skip
        search.prepare_iteration()
    collect, search._trainer = search.collect_rollouts, None

    def unstable_model():  # the model's imagination diverges after its second step
        r = collect()
        r.obs[2:] = float("inf")
        return r

    monkeypatch.setattr(search, "collect_rollouts", unstable_model)
    with pytest.raises(FloatingPointError, match=r"rollout state is nan at policy iteration 1 \(first non-finite "
                                                 r"state 2.0\)$"):  # fmt: skip
        search.prepare_iteration()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_loss_on_rank_1_alone_stops_both_ranks_with_the_same_note(tmp_path):
    poison = '{"class_path": "kill_switch.NaNTargetsAtStep", "init_args": {"step": 1, "rank": 1}}'
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, *DDP,
                   f"--trainer.callbacks+={poison}", check=False, timeout=240)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = "FloatingPointError: model loss is nan at step 1 on rank 1 of 2 (nll nan, kl "
    note = "Dyna iteration 1, model phase: stopped on non-finite values; no checkpoint yet"
    assert proc.stderr.count(error) == 2 and proc.stderr.count(note) == 2, proc.stderr[-6000:]
    assert "is deprecated" not in proc.stderr, "the check's collective must not warn"
