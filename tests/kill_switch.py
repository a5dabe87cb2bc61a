"""Test helper callbacks: a hard kill, a preemption signal and a non-finite model loss on cue."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl

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


class NaNTargetsAtStep(pl.Callback):
    """Poison the model's training batch at a given step (NaN targets → NaN loss)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["target_y"].fill_(float("nan"))


class SignalAtStep(pl.Callback):
    """Send ``signum`` to this process at a given training step (mid-epoch)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
