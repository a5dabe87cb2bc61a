"""Test helper callbacks: a hard kill, a crash mid checkpoint write, a preemption signal and a non-finite
model loss on cue."""

from __future__ import annotations

import io
import os
import signal

import pytorch_lightning as pl
import torch

from callbacks import DynaLoop


class KillAtStep(pl.Callback):
    """SIGKILL at a given training step, as a crash or OOM would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalDuringPolicy(pl.Callback):
    """Send ``signum`` to this process after the first PPO iteration of Dyna iteration ``iteration``'s
    policy phase, as a scheduler would at any moment."""

    def __init__(self, iteration: int, signum: int = int(signal.SIGTERM)):
        self.iteration, self.signum = iteration, signum

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 != self.iteration:
            return
        aps = next(c for c in trainer.callbacks if isinstance(c, DynaLoop)).aps
        signum, done = self.signum, aps.on_train_epoch_end

        def end_of_ppo_iteration() -> None:
            done()
            os.kill(os.getpid(), signum)

        aps.on_train_epoch_end = end_of_ppo_iteration


class KillWhileWriting(pl.Callback):
    """SIGKILL half-way through the ``write``-th checkpoint file written at the end of Dyna iteration
    ``iteration`` (``ModelCheckpoint`` writes its top-k file, then ``last.ckpt``), as a crash or a
    preemption's kill during the write would."""

    def __init__(self, iteration: int, write: int):
        self.iteration, self.write = iteration, write

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # before ModelCheckpoint's, which Lightning runs last
        if trainer.current_epoch + 1 != self.iteration:
            return
        real_save, calls = torch.save, []

        def save(obj, file, *args, **kwargs):
            calls.append(file)
            if len(calls) < self.write:
                return real_save(obj, file, *args, **kwargs)
            whole = io.BytesIO()
            real_save(obj, whole)
            file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save


class NaNTargetsAtStep(pl.Callback):
    """Poison the model's training batch at a given step (NaN targets → NaN loss), on every rank or
    on ``rank`` only."""

    def __init__(self, step: int, rank: int | None = None):
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            batch["target_y"].fill_(float("nan"))


class SignalAtStep(pl.Callback):
    """Send ``signum`` to this process at a given training step (mid-epoch)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
