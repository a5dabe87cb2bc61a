"""The main job end to end from the command line: fit (2 Dyna iterations), test, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cli_runner import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs

TINY = str(ROOT / "tests/configs/tiny_dyna.yaml")
LOG = Path("runs/tiny/fixed")


def fit(cwd: Path, *extra: str, env: str = "acrobot") -> None:
    run_cli(cwd, "fit", "--config", str(ROOT / f"conf/{env}.yaml"), "--config", TINY, *extra)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("dyna")
    fit(cwd)
    return cwd


def scalars(log_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def check_metatest(path: Path, family: str) -> dict:
    report = json.loads(path.read_text())
    tasks = envs.make_family(family).test_tasks()
    for method in ("gssm_aps", "random"):
        rows = [r for r in report["tasks"] if r["method"] == method]
        assert sorted(r["task"] for r in rows) == sorted(t.name for t in tasks)
        assert all(math.isfinite(r["return_mean"]) and math.isfinite(r["return_std"]) for r in rows)
        for split in ("interpolation", "extrapolation"):
            assert math.isfinite(report["summary"][method][split])
    return report


def test_fit_runs_the_dyna_loop_and_logs_every_phase(fitted):
    log_dir = fitted / LOG
    values = scalars(log_dir)
    for tag in (
        "model/train/nll", "model/val/nll", "policy/loss", "policy/entropy", "policy/imagined_return",
        "real/return", "real/transitions", "time/model", "time/policy", "time/collect", "time/eval",
        "metatest/return_mean", "metatest/return_std", "metatest/interpolation/reward_per_step",
        "metatest/extrapolation/reward_per_step", "metatest/task/extrap-mixed",
    ):  # fmt: skip
        assert tag in values, (tag, sorted(values))
        assert all(math.isfinite(v) for v in values[tag]), tag
    assert values["dyna/iteration"] == [1.0, 2.0]
    # random data, then 200 steps per task per iteration
    assert values["real/transitions"] == [3 * 40 + 3 * 200, 3 * 40 + 2 * 3 * 200]
    assert len(values["metatest/return_mean"]) == 2  # eval_every 1
    check_metatest(log_dir / "metatest.json", "acrobot")
    assert "| gssm_aps |" in (log_dir / "metatest.md").read_text()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert any(tag.startswith("metatest/rollout/") for tag in events.Tags()["images"])
    assert "metatest/table/text_summary" in events.Tags()["tensors"]


def test_checkpoint_holds_everything_the_loop_needs(fitted):
    ckpt = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=False)
    loop = ckpt["callbacks"]["DynaLoop"]
    assert loop["iteration"] == 2
    assert {"aps", "aps_optimizer", "torch_rng"} <= set(loop)
    assert any(k.startswith("policy.input_normalizer") for k in loop["aps"])
    assert loop["aps_optimizer"]["state"], "APS optimizer state must be saved"
    assert ckpt["TransitionDataModule"]["buffer"]["size"].tolist() == [40 + 2 * 200] * 3
    assert "x_normalizer.mean" in ckpt["state_dict"]


def test_test_command_runs_the_meta_test_from_a_checkpoint(fitted, tmp_path):
    ckpt = fitted / LOG / "checkpoints/last.ckpt"
    proc = run_cli(
        tmp_path,
        "test",
        "--config",
        str(ROOT / "conf/acrobot.yaml"),
        "--config",
        TINY,
        "--ckpt_path",
        str(ckpt),
    )
    assert "metatest/return_mean" in proc.stdout
    check_metatest(tmp_path / LOG / "metatest.json", "acrobot")


def test_cartpole_main_job_runs(tmp_path):
    fit(tmp_path, "--trainer.max_epochs", "1", env="cartpole_swingup")
    check_metatest(tmp_path / LOG / "metatest.json", "cartpole_swingup")


def test_resume_after_iteration_1_equals_the_uninterrupted_run(fitted, tmp_path):
    """Same seed, CPU: stop after iteration 1, resume with --ckpt_path last, compare with the
    uninterrupted 2-iteration run bit for bit (model, policy, optimizers, buffers)."""
    fit(tmp_path, "--trainer.max_epochs", "1")
    ckpt_1 = tmp_path / LOG / "checkpoints/last.ckpt"
    assert torch.load(ckpt_1, weights_only=False)["callbacks"]["DynaLoop"]["iteration"] == 1
    fit(tmp_path, "--ckpt_path", str(ckpt_1))
    resumed = torch.load(tmp_path / LOG / "checkpoints/last.ckpt", weights_only=False)
    straight = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=False)
    assert resumed["callbacks"]["DynaLoop"]["iteration"] == 2
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for key, value in straight["callbacks"]["DynaLoop"]["aps"].items():
        assert torch.equal(resumed["callbacks"]["DynaLoop"]["aps"][key], value), key
    for key, value in straight["TransitionDataModule"]["buffer"].items():
        assert torch.equal(resumed["TransitionDataModule"]["buffer"][key], value), key


def test_a_run_killed_mid_iteration_resumes_from_its_last_checkpoint(tmp_path):
    kill = '{"class_path": "kill_switch.KillAtStep", "init_args": {"step": 4}}'  # in iteration 2's model epoch
    proc = run_cli(
        tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
        "--trainer.max_epochs", "3", f"--trainer.callbacks+={kill}", check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    last = tmp_path / LOG / "checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["callbacks"]["DynaLoop"]["iteration"] == 1
    fit(tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", str(last))
    done = torch.load(last, weights_only=False)
    assert done["callbacks"]["DynaLoop"]["iteration"] == 3
    assert done["TransitionDataModule"]["buffer"]["size"].tolist() == [40 + 3 * 200] * 3


def test_policy_alone_on_a_frozen_dynamics_checkpoint(fitted, tmp_path):
    ckpt = str(fitted / LOG / "checkpoints/last.ckpt")
    small = ["--model.hidden_dim", "8", "--model.horizon", "3", "--model.rollouts_per_task", "4",
             "--model.context_sets_per_task", "2",
             "--model.context_size", "8", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
             "--trainer.logger.init_args.version", "fixed"]  # fmt: skip
    run_cli(
        tmp_path, "fit", "--config", str(ROOT / "conf/policy/acrobot.yaml"), "--model.dynamics_checkpoint", ckpt, *small
    )
    log_dir = tmp_path / "runs/policy/acrobot/fixed"
    values = scalars(log_dir)
    for tag in ("policy/loss", "policy/entropy", "policy/imagined_return"):
        assert tag in values and all(math.isfinite(v) for v in values[tag]), tag
    saved = torch.load(log_dir / "checkpoints/last.ckpt", weights_only=False)
    assert any(k.startswith("policy.actor") for k in saved["state_dict"])
    assert not any(k.startswith("net.") for k in saved["state_dict"]), (
        "the dynamics model must not be saved as part of APS"
    )
    assert saved["optimizer_states"][0]["state"]
    wrong = run_cli(
        tmp_path, "fit", "--config", str(ROOT / "conf/policy/acrobot.yaml"), "--model.dynamics_checkpoint", ckpt,
        "--model.env", "cartpole_swingup", *small, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "is for env 'acrobot', not 'cartpole_swingup'" in wrong.stderr


@pytest.mark.parametrize("env", ["half_cheetah", "slim_humanoid"])
def test_mujoco_smoke_config_runs_one_full_dyna_iteration(env, tmp_path):
    run_cli(tmp_path, "fit", "--config", str(ROOT / f"conf/smoke/{env}.yaml"), "--trainer.enable_progress_bar", "false")
    log_dir = next((tmp_path / "runs/smoke" / env).glob("version_*"))
    values = scalars(log_dir)
    assert values["dyna/iteration"] == [1.0]
    for tag in ("model/train/nll", "policy/loss", "real/reward_per_step", "time/collect", "metatest/return_mean"):
        assert tag in values and all(math.isfinite(v) for v in values[tag]), tag
    report = json.loads((log_dir / "metatest.json").read_text())
    tasks = {(r["task"], r["split"]) for r in report["tasks"]}  # the two smoke test tasks, one per split
    assert len(tasks) == 2 and {split for _, split in tasks} == {"interpolation", "extrapolation"}
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
