"""The main job end to end from the command line: fit (2 Dyna iterations), test, resume."""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs

pytestmark = pytest.mark.slow  # end to end: train.py in a subprocess

TINY = str(ROOT / "tests/configs/tiny_dyna.yaml")
LOG = Path("runs/acrobot/fixed")


def fit(cwd: Path, *extra: str, env: str = "acrobot") -> str:
    """Run the tiny main job; returns what the terminal showed."""
    proc = run_cli(cwd, "fit", "--config", str(ROOT / f"conf/{env}.yaml"), "--config", TINY, *extra)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("dyna")
    (cwd / "terminal.txt").write_text(fit(cwd))
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
        "model/train/nll", "model/val/nll", "policy/loss", "policy/entropy", "policy/imagined_return_over_horizon",
        "real/episode_return", "real/transitions", "time/model_seconds", "time/policy_seconds",
        "time/collect_seconds", "time/eval_seconds", "time/iteration_seconds", "time/total_seconds",
        "metatest/return_mean", "metatest/return_std", "metatest/interpolation/reward_per_step",
        "metatest/extrapolation/reward_per_step", "metatest/interpolation/random_reward_per_step",
        "metatest/extrapolation/random_reward_per_step", "metatest/task/extrap-mixed",
        "by_real_transitions/real_reward_per_step", "by_real_transitions/metatest_interpolation_reward_per_step",
    ):  # fmt: skip
        assert tag in values, (tag, sorted(values))
        assert all(math.isfinite(v) for v in values[tag]), tag
    assert values["dyna/iteration"] == [1.0, 2.0]
    # random data, then 200 steps per task per iteration
    assert values["real/transitions"] == [3 * 40 + 3 * 200, 3 * 40 + 2 * 3 * 200]
    assert len(values["metatest/return_mean"]) == 2  # every iteration
    assert values["time/total_seconds"][1] > values["time/total_seconds"][0]
    by_real = EventAccumulator(str(log_dir))
    by_real.Reload()
    assert [e.step for e in by_real.Scalars("by_real_transitions/real_reward_per_step")] == [720, 1320]
    check_metatest(log_dir / "metatest.json", "acrobot")
    assert "| gssm_aps |" in (log_dir / "metatest.md").read_text()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert any(tag.startswith("metatest/rollout/") for tag in events.Tags()["images"])
    assert "metatest/table/text_summary" in events.Tags()["tensors"]


def test_the_terminal_shows_lightning_banners_once_and_one_line_per_iteration(fitted):
    out = (fitted / "terminal.txt").read_text()
    assert out.count("GPU available") == 1 and out.count("`Trainer.fit` stopped") == 1, out
    lines = [line for line in out.splitlines() if line.startswith("Dyna iteration ")]
    assert [line.split(" | ")[:2] for line in lines] == [
        ["Dyna iteration 1/2", "720 real transitions"], ["Dyna iteration 2/2", "1,320 real transitions"]
    ]
    for part in ("model val NLL ", "reward/step imagined ", " real ", "meta-test interp ", " extrap "):
        assert part in lines[-1], lines[-1]


def test_tensorboard_has_the_layout_hparams_one_projector_and_labelled_rollouts(fitted):
    from tensorboard.plugins.hparams import plugin_data_pb2

    log_dir = fitted / LOG
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert "hp_metric" not in events.Tags()["scalars"]
    hparams = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "hparams/final_metatest_interpolation_reward_per_step",
        "hparams/final_metatest_extrapolation_reward_per_step", "hparams/real_transitions",
    }  # fmt: skip
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    for key in ("model/hidden_dim", "data/num_train_tasks", "dyna/policy_epochs", "policy/horizon"):
        assert key in session.hparams, sorted(session.hparams)
    values = scalars(log_dir)
    final = values["hparams/final_metatest_interpolation_reward_per_step"]
    assert final == [values["metatest/interpolation/reward_per_step"][-1]]
    assert "custom_scalars__config__" in events.PluginTagToContent("custom_scalars")
    assert (log_dir / "projector_config.pbtxt").read_text().count("embeddings {") == 1
    assert sorted(p.name for p in log_dir.iterdir() if p.is_dir()) == ["checkpoints", "projector"]
    assert {"metatest/rollout/interpolation", "metatest/rollout/extrapolation"} <= set(events.Tags()["images"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.num_train_tasks", "0"], "error: data.init_args.num_train_tasks: 0 — expected an integer ≥ 1"),
        (["--env", "foo"], "error: unknown task family 'foo'; known families: ["),
        (["--dyna.metatest.tasks=[nope]"], "error: unknown metatest.tasks ['nope'] for acrobot"),
        (["--data.env", "cartpole_swingup"], "error: --data.env is set by --env; give --env instead"),
        (["--ckpt_path", "missing.ckpt"], "error: checkpoint 'missing.ckpt' does not exist or is not a file"),
        (["--ckpt_path", "truncated.ckpt"], "error: checkpoint 'truncated.ckpt' is unreadable"),
    ],
)
def test_a_failed_start_leaves_no_run_folder_and_says_why_in_one_line(tmp_path, args, expected):
    (tmp_path / "truncated.ckpt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, *args, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Given value" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_checkpoint_holds_everything_the_loop_needs(fitted):
    ckpt = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=True)
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
    check_metatest(tmp_path / "runs/cartpole_swingup/fixed/metatest.json", "cartpole_swingup")


def test_resume_after_iteration_1_equals_the_uninterrupted_run(fitted, tmp_path):
    """Same seed, CPU: stop after iteration 1, resume with --ckpt_path last, compare with the
    uninterrupted 2-iteration run bit for bit (model, policy, optimizers, buffers)."""
    fit(tmp_path, "--trainer.max_epochs", "1")
    ckpt_1 = tmp_path / LOG / "checkpoints/last.ckpt"
    assert torch.load(ckpt_1, weights_only=True)["callbacks"]["DynaLoop"]["iteration"] == 1
    fit(tmp_path, "--ckpt_path", str(ckpt_1))
    resumed = torch.load(tmp_path / LOG / "checkpoints/last.ckpt", weights_only=True)
    straight = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=True)
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
    assert torch.load(last, weights_only=True)["callbacks"]["DynaLoop"]["iteration"] == 1
    fit(tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", str(last))
    done = torch.load(last, weights_only=True)
    assert done["callbacks"]["DynaLoop"]["iteration"] == 3
    assert done["TransitionDataModule"]["buffer"]["size"].tolist() == [40 + 3 * 200] * 3


def assert_same_state(a: Path, b: Path) -> None:
    """Model, policy, both optimizers and the buffers of two checkpoints are bit-identical."""
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert left["callbacks"]["DynaLoop"]["iteration"] == right["callbacks"]["DynaLoop"]["iteration"]
    for part in ("state_dict",):
        for key, value in right[part].items():
            assert torch.equal(left[part][key], value), key
    for key, value in right["callbacks"]["DynaLoop"]["aps"].items():
        assert torch.equal(left["callbacks"]["DynaLoop"]["aps"][key], value), key
    for key, value in right["TransitionDataModule"]["buffer"].items():
        assert torch.equal(left["TransitionDataModule"]["buffer"][key], value), key
    for name, l_opt, r_opt in (("model", left["optimizer_states"][0], right["optimizer_states"][0]),
                               ("aps", left["callbacks"]["DynaLoop"]["aps_optimizer"],
                                right["callbacks"]["DynaLoop"]["aps_optimizer"])):  # fmt: skip
        assert l_opt["state"].keys() == r_opt["state"].keys(), name
        for index, moments in r_opt["state"].items():
            for key, value in moments.items():
                assert torch.equal(l_opt["state"][index][key], value), (name, index, key)


@pytest.mark.parametrize(("signum", "iteration"), [(signal.SIGTERM, 1), (signal.SIGUSR1, 2)])
def test_a_preemption_signal_in_the_policy_phase_saves_a_checkpoint_that_resumes_exactly(
    fitted, tmp_path, signum, iteration
):
    """The signal arrives mid policy phase (iteration 1, or the last one); the run finishes the
    phase, saves last.ckpt, exits 128 + signum; the resume ends bit-identical to the uninterrupted run."""
    cue = {"class_path": "kill_switch.SignalDuringPolicy", "init_args": {"iteration": iteration, "signum": int(signum)}}
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
                   f"--trainer.callbacks+={json.dumps(cue)}", check=False)  # fmt: skip
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"{signal.Signals(signum).name} received: stopped at a safe point" in proc.stderr
    last = tmp_path / LOG / "checkpoints/last.ckpt"
    saved = torch.load(last, weights_only=True)["callbacks"]["DynaLoop"]
    assert (saved["iteration"], saved["completed"]) == (iteration, "policy")
    fit(tmp_path, "--ckpt_path", str(last))
    assert_same_state(last, fitted / LOG / "checkpoints/last.ckpt")
    assert scalars(tmp_path / LOG)["dyna/iteration"] == [1.0, 2.0]
    assert len((tmp_path / LOG / "metatest_history.jsonl").read_text().splitlines()) == 2


def test_a_nan_model_loss_stops_the_run_naming_phase_iteration_and_checkpoint(tmp_path):
    poison = '{"class_path": "kill_switch.NaNTargetsAtStep", "init_args": {"step": 4}}'  # iteration 2's model epoch
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
                   f"--trainer.callbacks+={poison}", check=False)  # fmt: skip
    last = tmp_path / LOG / "checkpoints/last.ckpt"
    assert proc.returncode == 1
    assert "model loss is nan at step 4" in proc.stderr
    kept_note = f"the last good checkpoint {LOG / 'checkpoints/last.ckpt'} is intact"
    assert f"Dyna iteration 2, model phase: stopped on non-finite values; {kept_note}" in proc.stderr
    kept = torch.load(last, weights_only=True)
    assert kept["callbacks"]["DynaLoop"]["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


def test_resume_continues_in_the_run_folder_with_one_curve_and_one_history(tmp_path):
    """A run without a fixed logger version, killed in iteration 2's model epoch, resumed from its
    version_0/checkpoints/last.ckpt: it goes on in that folder (whatever its name); the killed
    process's events after the checkpoint are purged, so each step appears once."""
    auto = ["--trainer.logger.init_args.version", "null", "--trainer.max_epochs", "3"]
    kill = '{"class_path": "kill_switch.KillAtStep", "init_args": {"step": 4}}'
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY, *auto,
                   f"--trainer.callbacks+={kill}", check=False)  # fmt: skip
    assert proc.returncode == -9
    # a folder not named after the env (as earlier versions named baselines' runs): the resume goes there
    (tmp_path / "runs/acrobot").rename(tmp_path / "runs/earlier_name")
    run = tmp_path / "runs/earlier_name/version_0"
    fit(tmp_path, *auto, "--ckpt_path", str(run / "checkpoints/last.ckpt"))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["earlier_name"]
    assert sorted(p.name for p in (tmp_path / "runs/earlier_name").iterdir()) == ["version_0"]
    values = scalars(run)
    assert values["dyna/iteration"] == [1.0, 2.0, 3.0]
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("model/train/loss")]
    assert steps == sorted(set(steps)), steps
    history = [json.loads(line) for line in (run / "metatest_history.jsonl").read_text().splitlines()]
    assert [h["real_transitions"] for h in history] == [720, 1320, 1920]


def test_a_checkpoint_that_needs_pickled_code_is_refused_with_its_name(fitted, tmp_path):
    ckpt = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=True)
    marker = tmp_path / "payload_ran"
    ckpt["extra"] = Payload(str(marker))
    tampered = tmp_path / "tampered.ckpt"
    torch.save(ckpt, tampered)
    for command in ("fit", "test"):
        proc = run_cli(tmp_path, command, "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY,
                       "--ckpt_path", str(tampered), check=False)  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: checkpoint {str(tampered)!r} needs pickled code to load (getattr), which mbmrl "
            "never runs (weights_only=True); expected a checkpoint written by this project's train.py"
        ), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


class Payload:
    """What a tampered checkpoint could carry: code that runs on unpickling."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


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
    for tag in ("policy/loss", "policy/entropy", "policy/imagined_return_over_horizon"):
        assert tag in values and all(math.isfinite(v) for v in values[tag]), tag
    saved = torch.load(log_dir / "checkpoints/last.ckpt", weights_only=True)
    assert any(k.startswith("policy.actor") for k in saved["state_dict"])
    assert not any(k.startswith("net.") for k in saved["state_dict"]), (
        "the dynamics model must not be saved as part of APS"
    )
    assert saved["optimizer_states"][0]["state"]
    wrong = run_cli(
        tmp_path, "fit", "--config", str(ROOT / "conf/policy/acrobot.yaml"), "--model.dynamics_checkpoint", ckpt,
        "--env", "cartpole_swingup", *small, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "is for env 'acrobot', not 'cartpole_swingup'" in wrong.stderr


@pytest.mark.parametrize("env", ["half_cheetah", "slim_humanoid"])
def test_mujoco_smoke_config_runs_one_full_dyna_iteration(env, tmp_path):
    run_cli(tmp_path, "fit", "--config", str(ROOT / f"conf/smoke/{env}.yaml"), "--trainer.enable_progress_bar", "false")
    log_dir = next((tmp_path / "runs/smoke" / env).glob("version_*"))
    values = scalars(log_dir)
    assert values["dyna/iteration"] == [1.0]
    for tag in ("model/train/nll", "policy/loss", "real/reward_per_step", "time/collect_seconds",
                "metatest/return_mean"):
        assert tag in values and all(math.isfinite(v) for v in values[tag]), tag
    report = json.loads((log_dir / "metatest.json").read_text())
    tasks = {(r["task"], r["split"]) for r in report["tasks"]}  # the two smoke test tasks, one per split
    assert len(tasks) == 2 and {split for _, split in tasks} == {"interpolation", "extrapolation"}
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_the_training_tasks_benchmark_runs_the_meta_test_protocol_on_the_checkpoints_own_tasks(fitted):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from training_tasks_metatest import training_tasks_reward

    result = training_tasks_reward(str(fitted / LOG / "checkpoints/last.ckpt"), context=5, episodes=2, seed=0)
    train_tasks = envs.make_family("acrobot").train_tasks(3, 0)  # tiny_dyna.yaml: 3 tasks, task seed 0
    assert list(result["per_task"]) == [t.name for t in train_tasks]
    assert all(-1.0 <= r <= 0.0 for r in result["per_task"].values())  # acrobot's per-step reward range
    assert math.isclose(result["reward_per_step"], sum(result["per_task"].values()) / 3)


@pytest.mark.parametrize("method", ["gssm_mpc", "gssm_nonamortized"])
def test_a_test_time_method_meta_tests_a_main_job_checkpoint(fitted, tmp_path, method):
    ckpt = str(fitted / LOG / "checkpoints/last.ckpt")
    tiny = ("--model.metatest.episodes", "2", "--model.metatest.context", "5", "--model.mpc.samples", "4",
            "--model.mpc.horizon", "3", "--model.search_iterations", "2", "--model.search_rollouts", "8")  # fmt: skip
    run_cli(tmp_path, "test", "--config", str(ROOT / f"conf/baselines/acrobot_{method}.yaml"),
            "--model.checkpoint", ckpt, *tiny)  # fmt: skip
    log_dir = tmp_path / f"runs/{method}/acrobot/version_0"
    report = json.loads((log_dir / "metatest.json").read_text())
    tasks = sorted(t.name for t in envs.make_family("acrobot").test_tasks())
    for name in (method, "random"):
        rows = [r for r in report["tasks"] if r["method"] == name]
        assert sorted(r["task"] for r in rows) == tasks and all(r["episodes"] == 2 for r in rows)
        assert all(-1.0 <= r["reward_per_step"] <= 0.0 for r in rows)
    compute = json.loads((log_dir / "test_compute.json").read_text())
    assert compute["method"] == method and compute["time/test_seconds_per_task"] > 0
    assert (compute.get("time/test_seconds_per_action", 0) > 0) == (method == "gssm_mpc")
    history = (log_dir / "metatest_history.jsonl").read_text().splitlines()
    assert json.loads(history[0])["real_transitions"] == 3 * (40 + 2 * 200)  # the checkpoint's: tiny_dyna.yaml

    wrong_env = run_cli(tmp_path, "test", "--config", str(ROOT / f"conf/baselines/cartpole_swingup_{method}.yaml"),
                        "--model.checkpoint", ckpt, check=False)  # fmt: skip
    assert wrong_env.returncode != 0
    assert "was made for env 'acrobot', not 'cartpole_swingup'" in wrong_env.stderr


def test_a_checkpoint_of_a_version_before_the_current_layout_is_refused_by_name(fitted, tmp_path):
    """Checkpoints written before the APS settings were saved in them do not load (README)."""
    from modules.methods.gssm_aps.dyna_checkpoint import load_dyna_checkpoint

    ckpt = torch.load(fitted / LOG / "checkpoints/last.ckpt", weights_only=True)
    del ckpt["callbacks"]["DynaLoop"]["aps_hparams"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"old\.ckpt.* before the current layout .* retrain"):
        load_dyna_checkpoint(tmp_path / "old.ckpt")
