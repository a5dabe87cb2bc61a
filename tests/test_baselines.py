"""DR-PPO and PE-PPO: the PE encoder's invariances, and each baseline fit + test from the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_runner import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
from modules.methods.model_free_ppo import ModelFreePPO
from modules.policies.pe_encoder import ProbabilisticContextEncoder

# a tiny budget: 2 PPO iterations of 2 episodes × 200 steps, meta-test on 2 tasks × 2 episodes
TINY = [
    "--model.budget.real_transitions", "800", "--model.envs_per_iteration", "2", "--model.hidden_dim", "16",
    "--model.latent_dim", "3", "--model.metatest.episodes", "2", "--model.metatest.context", "5",
    "--model.metatest.tasks", "[interp-default, extrap-mixed]", "--trainer.enable_progress_bar", "false",
    "--trainer.logger.init_args.version", "fixed",
]  # fmt: skip


def test_pe_encoder_is_permutation_invariant_and_its_kl_is_non_negative():
    torch.manual_seed(0)
    enc = ProbabilisticContextEncoder(x_dim=7, y_dim=6, latent_dim=4, hidden_dim=32)
    for w in enc.parameters():  # a non-trivial encoder, not the near-zero initialisation
        w.data.normal_(0, 0.5)
    cx, cy = torch.randn(5, 12, 7), torch.randn(5, 12, 6)
    mask = torch.rand(5, 12) < 0.6
    mask[0] = False  # an empty context: the unit prior
    q = enc(cx, cy, mask)
    perm = torch.randperm(12)
    q_perm = enc(cx[:, perm], cy[:, perm], mask[:, perm])
    torch.testing.assert_close(q.mean, q_perm.mean)
    torch.testing.assert_close(q.stddev, q_perm.stddev)
    torch.testing.assert_close(q.mean[0], torch.zeros(4))
    torch.testing.assert_close(q.stddev[0], torch.ones(4))
    kl = enc.kl_to_prior(q)
    assert (kl >= 0).all() and kl[0].abs() < 1e-6
    # more context never widens the posterior (precisions add)
    grown = mask.clone()
    grown[:, :6] = True
    assert (enc(cx, cy, grown).stddev <= enc(cx, cy, grown & mask).stddev + 1e-6).all()
    with pytest.raises(ValueError, match=r"\[B, N, 7\]"):
        enc(cx[..., :5], cy, mask)


def test_unknown_method_and_task_names_are_rejected():
    with pytest.raises(ValueError, match="'ppo'"):
        ModelFreePPO(method="ppo")
    with pytest.raises(ValueError, match="nope"):
        ModelFreePPO(metatest={"tasks": ["nope"]})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dr_ppo", "pe_ppo"])
def test_baseline_fits_and_tests_from_the_command_line(method, tmp_path):
    config = str(ROOT / f"conf/baselines/acrobot_{method}.yaml")
    run_cli(tmp_path, "fit", "--config", config, *TINY)
    log_dir = tmp_path / f"runs/{method}/acrobot/fixed"
    events = EventAccumulator(str(log_dir))
    events.Reload()
    values = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for tag in ("policy/loss", "policy/entropy", "real/episode_return", "real/transitions",
                "metatest/return_mean", "metatest/interpolation/reward_per_step",
                "metatest/extrapolation/reward_per_step"):  # fmt: skip
        assert tag in values and all(math.isfinite(v) for v in values[tag]), (tag, sorted(values))
    assert values["real/transitions"] == [400.0, 800.0]  # the budget stops the run after 2 iterations
    assert "hp_metric" not in values  # the HParams tab gets the final meta-test instead
    assert values["hparams/final_metatest_interpolation_reward_per_step"] == values[
        "metatest/interpolation/reward_per_step"][-1:]  # fmt: skip
    report = json.loads((log_dir / "metatest.json").read_text())
    assert {r["method"] for r in report["tasks"]} == {method, "random"}
    assert sorted(r["task"] for r in report["tasks"] if r["method"] == method) == ["extrap-mixed", "interp-default"]
    assert "800 real training transitions" in report["header"]
    assert all(len(r["latent"]) == (3 if r["method"] == "pe_ppo" else 0) for r in report["tasks"])
    history = [json.loads(line) for line in (log_dir / "metatest_history.jsonl").read_text().splitlines()]
    assert [h["real_transitions"] for h in history] == [800]  # every_transitions (28,800) > budget: the final one
    assert history[0]["summary"] == report["summary"]

    ckpt = log_dir / "checkpoints/last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["model_free_ppo"]["real_transitions"] == 800
    assert ("encoder.factor.0.weight" in state["state_dict"]) == (method == "pe_ppo")
    (log_dir / "metatest.json").unlink()
    run_cli(tmp_path, "test", "--config", config, *TINY, "--ckpt_path", str(ckpt))
    tested = json.loads((log_dir / "metatest.json").read_text())
    assert [r["return_mean"] for r in tested["tasks"]] == [r["return_mean"] for r in report["tasks"]]


def test_a_checkpoint_of_another_method_is_refused(tmp_path):
    agent = ModelFreePPO(method="dr_ppo", hidden_dim=8)
    ckpt = {"hyper_parameters": {"env": "acrobot", "method": "pe_ppo"}, "model_free_ppo": {}}
    with pytest.raises(ValueError, match="method='pe_ppo'"):
        agent.on_load_checkpoint(ckpt)
    assert envs.make_family("acrobot").episode_length == 200  # the TINY budget above assumes it
