"""The model-only job from the command line: fit, rerun, test, ablation flag, bad checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli_runner import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow  # end to end: train.py in a subprocess

TINY = [
    "--trainer.max_epochs", "2",
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger.init_args.version", "fixed",
    "--data.num_train_tasks", "4",
    "--data.random_steps_per_task", "60",
    "--data.val_steps_per_task", "30",
    "--data.tasks_per_batch", "2",
    "--data.context_min", "2",
    "--data.context_max", "10",
    "--data.num_targets", "5",
    "--data.batches_per_epoch", "3",
    "--data.val_batches", "2",
    "--model.hidden_dim", "16",
    "--model.latent_dim", "2",
    "--model.num_heads", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    run_cli(cwd, "fit", "--config", str(ROOT / "conf/model/acrobot.yaml"), *TINY)
    return cwd


def test_fit_logs_model_metrics_per_split_latents_and_a_checkpoint(fitted):
    log_dir = fitted / "runs/model/acrobot/fixed"
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for split in ("train", "val", "val_interpolation", "val_extrapolation"):
        for name in ("nll", "mse", "kl"):
            tag = f"model/{split}/{name}"
            assert tag in scalars, (tag, sorted(scalars))
            assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    assert "model/latent_readout" in events.Tags()["images"]
    # one projector embedding, rewritten at each validation: no folder per step
    assert (log_dir / "projector_config.pbtxt").read_text().count("embeddings {") == 1
    assert sorted(p.name for p in log_dir.iterdir() if p.is_dir()) == ["checkpoints", "projector"]
    assert len((log_dir / "projector/metadata.tsv").read_text().splitlines()) == 1 + 4 + 6  # header, tasks
    assert (log_dir / "config.yaml").exists()

    ckpt = torch.load(log_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["env"] == "acrobot"
    assert {"x_normalizer.mean", "y_normalizer.std"} <= set(ckpt["state_dict"])
    assert ckpt["state_dict"]["y_normalizer.count"] == 4 * 60
    assert ckpt["TransitionDataModule"]["buffer"]["size"].tolist() == [60] * 4


def test_rerun_into_the_same_directory_and_test_from_the_checkpoint(fitted):
    config = str(ROOT / "conf/model/acrobot.yaml")
    run_cli(fitted, "fit", "--config", config, *TINY, "--trainer.max_epochs", "1")
    proc = run_cli(
        fitted,
        "test",
        "--config",
        config,
        *TINY,
        "--ckpt_path",
        "runs/model/acrobot/fixed/checkpoints/last.ckpt",
    )
    assert "model/test/nll" in proc.stdout
    assert "model/test_extrapolation/nll" in proc.stdout


def test_ablation_variant_trains_from_the_same_command(tmp_path):
    run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/model/cartpole_swingup.yaml"), *TINY,
            "--model.variant", "mlsm_v1", "--trainer.max_epochs", "1")  # fmt: skip
    ckpt = torch.load(tmp_path / "runs/model/cartpole_swingup/fixed/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["variant"] == "mlsm_v1"
    assert ckpt["hyper_parameters"]["env"] == "cartpole_swingup"


def test_checkpoint_of_another_env_is_rejected_with_a_clear_message(fitted):
    proc = run_cli(
        fitted, "validate", "--config", str(ROOT / "conf/model/cartpole_swingup.yaml"), *TINY,
        "--ckpt_path", "runs/model/acrobot/fixed/checkpoints/last.ckpt", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    # the model is built for the config's env (train.py links it) and refuses the checkpoint's weights
    assert "checkpoint was trained with env='acrobot' but this model has env='cartpole_swingup'" in proc.stderr


def test_sigterm_mid_epoch_saves_at_the_epoch_end_and_the_resume_finishes(tmp_path):
    """The model-only job (as the APS-only and model-free jobs) stops at the end of the epoch the
    signal arrived in, with last.ckpt written there, and exits 143."""
    config = str(ROOT / "conf/model/acrobot.yaml")
    cue = '{"class_path": "kill_switch.SignalAtStep", "init_args": {"step": 4}}'  # epoch 2 of 3 batches each
    proc = run_cli(tmp_path, "fit", "--config", config, *TINY, "--trainer.max_epochs", "3",
                   f"--trainer.callbacks+={cue}", check=False)  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "SIGTERM received: stopped at a safe point" in proc.stderr
    last = tmp_path / "runs/model/acrobot/fixed/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6
    run_cli(tmp_path, "fit", "--config", config, *TINY, "--trainer.max_epochs", "3", "--ckpt_path", str(last))
    assert torch.load(last, weights_only=True)["global_step"] == 9


def test_print_config_shows_the_model_config(tmp_path):
    proc = run_cli(tmp_path, "fit", "--config", str(ROOT / "conf/model/acrobot.yaml"), "--print_config")
    assert "env: acrobot" in proc.stdout and "variant: gssm" in proc.stdout
