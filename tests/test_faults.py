"""Fast checks of the fault handling: safe checkpoint loads, preemption signals, non-finite weights,
resumed run folders and histories (the end-to-end runs are in test_dyna_cli.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from jsonargparse import Namespace

from callbacks import DynaLoop
from callbacks.dyna_state import trim_history
from callbacks.preemption import Preempted, PreemptionSignal
from common.checkpoints import CheckpointError, load_checkpoint
from modules import APSModule
from train import continue_run_folder


class RunsCode:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_load_checkpoint_refuses_missing_truncated_and_code_carrying_files(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"global_step": 7, "state_dict": {"w": torch.ones(300)}}, good)
    assert load_checkpoint(good)["global_step"] == 7
    with pytest.raises(CheckpointError, match=r"'.*missing.ckpt' does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"'.*truncated.ckpt' is unreadable"):
        load_checkpoint(truncated)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"'.*evil.ckpt' needs pickled code to load \(getattr\)"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_no_checkpoint_with_non_finite_weights_is_written():
    loop = DynaLoop()
    loop.aps = APSModule(env="acrobot", latent_dim=2, hidden_dim=8)
    loop.on_save_checkpoint(None, None, {"state_dict": {"w": torch.ones(3), "steps": torch.tensor(3)}})
    with pytest.raises(FloatingPointError, match="non-finite weights in w; no checkpoint was written"):
        loop.on_save_checkpoint(None, None, {"state_dict": {"w": torch.tensor([1.0, float("nan")])}})
    with torch.no_grad():
        next(loop.aps.parameters()).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"non-finite weights in aps\.policy"):
        loop.on_save_checkpoint(None, None, {"state_dict": {"w": torch.ones(3)}})


def test_a_stop_signal_is_recorded_and_becomes_a_requeueable_exit():
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, strategy=SimpleNamespace(root_device="cpu"))
    stop = PreemptionSignal()
    before = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        assert signal.getsignal(signal.SIGTERM) != before
        assert stop.requested(trainer) is None
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        assert stop.requested(trainer) == signal.SIGTERM
        with pytest.raises(Preempted) as exit_info:
            stop.stop(trainer, signal.SIGTERM, "runs/x/checkpoints/last.ckpt")
        assert exit_info.value.code == 143
        assert "resume from runs/x/checkpoints/last.ckpt" in str(exit_info.value)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs/acrobot/version_3"
    (run / "checkpoints").mkdir(parents=True)
    (run / "hparams.yaml").write_text("{}\n")
    return run


def test_a_resume_is_pointed_at_the_run_folder_of_its_checkpoint(tmp_path):
    run = run_folder(tmp_path)
    logger = Namespace(class_path="pytorch_lightning.loggers.TensorBoardLogger",
                       init_args=Namespace(save_dir="elsewhere", name="other", version=None))  # fmt: skip
    trainer = Namespace(logger=logger)
    continue_run_folder(trainer, run / "checkpoints/last.ckpt", global_step=42)
    args = trainer.logger.init_args
    assert Path(args.save_dir, args.name, args.version) == run.resolve()
    assert args.purge_step == 42
    fixed = Namespace(logger=Namespace(class_path=logger.class_path,
                                       init_args=Namespace(save_dir="runs", name="x", version="mine")))  # fmt: skip
    continue_run_folder(fixed, run / "checkpoints/last.ckpt", global_step=42)
    assert fixed.logger.init_args.version == "mine", "an explicit version wins"
    loose = tmp_path / "copied.ckpt"
    continue_run_folder(trainer := Namespace(logger=Namespace(class_path=logger.class_path,
                        init_args=Namespace(save_dir="runs", name="x", version=None))), loose, 1)  # fmt: skip
    assert trainer.logger.init_args.version is None, "a checkpoint outside a run folder starts a new version"


def test_a_resume_drops_history_lines_from_beyond_its_checkpoint(tmp_path):
    lines = [{"real_transitions": n, "summary": {}} for n in (720, 1320, 1920)]
    (tmp_path / "metatest_history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    trim_history(tmp_path, 1320)
    kept = [json.loads(x)["real_transitions"] for x in (tmp_path / "metatest_history.jsonl").read_text().splitlines()]
    assert kept == [720, 1320]
    trim_history(tmp_path / "absent", 0)  # no history yet: nothing to do


def test_a_non_finite_policy_loss_is_reported_with_iteration_phase_and_checkpoint(tmp_path):
    loop = DynaLoop()
    loop.progress.iteration, loop.progress.running = 3, "policy"
    (tmp_path / "last.ckpt").write_bytes(b"")
    callback = SimpleNamespace(dirpath=str(tmp_path), CHECKPOINT_NAME_LAST="last", FILE_EXTENSION=".ckpt")
    error = FloatingPointError("PPO loss is nan at policy iteration 57")
    loop.on_exception(SimpleNamespace(checkpoint_callback=callback), None, error)
    assert error.__notes__ == [
        f"Dyna iteration 3, policy phase: stopped on non-finite values; the last good checkpoint "
        f"{tmp_path / 'last.ckpt'} is intact (resume with --ckpt_path after lowering the learning rate or "
        "checking the data)"
    ]
