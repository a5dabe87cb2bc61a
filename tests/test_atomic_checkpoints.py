"""A checkpoint write that dies half-way leaves the previous checkpoint whole (DESIGN §4.4)."""

from __future__ import annotations

import io

import pytest
import pytorch_lightning as pl
import torch
from cli_runner import ROOT, run_cli
from lightning_fabric.plugins import TorchCheckpointIO
from test_dyna_cli import LOG, TINY, assert_same_state

import train
from common.atomic_checkpoint_io import AtomicCheckpointIO
from common.checkpoints import load_checkpoint


def half_written_then_failing(real_save):
    """A ``torch.save`` that writes the first half of the file and then fails, as a full disk would."""

    def save(obj, file):
        whole = io.BytesIO()
        real_save(obj, whole)
        file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    return save


def test_an_interrupted_write_leaves_last_ckpt_loadable_and_unchanged(tmp_path, monkeypatch):
    io_plugin, last = AtomicCheckpointIO(), tmp_path / "checkpoints/last.ckpt"
    io_plugin.save_checkpoint({"global_step": 3, "state_dict": {"w": torch.arange(1000.0)}}, last)
    before = last.read_bytes()
    monkeypatch.setattr(torch, "save", half_written_then_failing(torch.save))
    with pytest.raises(OSError, match="No space left"):
        io_plugin.save_checkpoint({"global_step": 6, "state_dict": {"w": torch.zeros(1000)}}, last)
    monkeypatch.undo()
    assert last.read_bytes() == before
    kept = load_checkpoint(last)
    assert kept["global_step"] == 3 and torch.equal(kept["state_dict"]["w"], torch.arange(1000.0))
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"], "the partial file is removed"
    io_plugin.save_checkpoint({"global_step": 9}, last)  # the next write replaces it
    assert load_checkpoint(last)["global_step"] == 9


def test_every_job_writes_its_checkpoints_atomically():
    cli = train.MbmrlCLI(pl.LightningModule, None, subclass_mode_model=True, run=False,
                         args=["--config", str(ROOT / "conf/model/acrobot.yaml")])  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert train.with_atomic_checkpoints(None)[0].__class__ is AtomicCheckpointIO
    own = TorchCheckpointIO()
    assert train.with_atomic_checkpoints(own) == [own], "a config's own CheckpointIO is kept"


@pytest.mark.slow
def test_a_dyna_run_killed_while_writing_last_ckpt_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL half-way through iteration 2's ``last.ckpt``: iteration 1's stays whole, and the resume
    from it ends bit-identical to a run never interrupted."""
    job = ["fit", "--config", str(ROOT / "conf/acrobot.yaml"), "--config", TINY]
    (straight := tmp_path / "straight").mkdir()
    run_cli(straight, *job)
    (crashed := tmp_path / "crashed").mkdir()
    kill = '{"class_path": "kill_switch.KillWhileWriting", "init_args": {"iteration": 2, "write": 2}}'
    proc = run_cli(crashed, *job, f"--trainer.callbacks+={kill}", check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    last = crashed / LOG / "checkpoints/last.ckpt"
    partial = last.with_name(".last.ckpt.partial")
    assert partial.stat().st_size > 0, "killed in the middle of writing last.ckpt"
    assert load_checkpoint(last)["callbacks"]["DynaLoop"]["iteration"] == 1
    run_cli(crashed, *job, "--ckpt_path", str(last))
    assert_same_state(last, straight / LOG / "checkpoints/last.ckpt")
    assert not partial.exists(), "the next write of last.ckpt took the crash's leftover"
