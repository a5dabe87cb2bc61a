"""`PreemptionSignal`: SIGTERM / SIGUSR1 turned into a stop at the run's next safe point.

Clusters announce a preemption or the end of a time limit with a signal a while before the kill
(SLURM: SIGTERM on preemption, ``#SBATCH --signal=USR1@<seconds>`` before the time limit). The
handler only records the signal. :class:`callbacks.DynaLoop` owns one and stops at
:meth:`PreemptionSignal.safe_point` between its phases; the other jobs (model only, APS only,
model-free baselines) list it among their callbacks, and it stops them at the end of an epoch. At a
safe point ``last.ckpt`` is written (:func:`save_last`) and :class:`Preempted` is raised.

Why not Lightning's own handlers: every ``Trainer.fit`` installs them, including the inner APS
trainer of the policy phase. Its SIGTERM handler ends *that* fit after the next batch (a half-trained
policy), and its SLURM SIGUSR1 handler saves whichever trainer is running at that instant — mid-phase,
or the inner APS trainer instead of the run. So this callback re-installs its handler in
``on_train_start`` of the main and of every inner trainer (after Lightning's), and Lightning restores
the previous handlers at each trainer's teardown. From Lightning it keeps the SLURM conventions:
SIGUSR1 means "requeue me" (``scontrol requeue``, as Lightning's ``SLURMEnvironment.auto_requeue``),
SIGTERM means "stop" (the scheduler requeues a preempted job itself), and the requeued job resumes
through ``--ckpt_path last``.

Example:
    >>> import os, signal
    >>> stop = PreemptionSignal()
    >>> stop.install()
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> stop.signum == signal.SIGUSR1
    True
    >>> stop.restore()
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from types import FrameType

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
REQUEUE_SIGNAL = signal.SIGUSR1


class Preempted(SystemExit):
    """The run stopped at a safe point after a preemption signal; the exit status is ``128 +
    signal number`` (143 for SIGTERM, 138 for SIGUSR1), what a shell reports for a process the
    signal killed, so wrappers that requeue on that status need no special case."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(128 + signum)
        self.signum, self.checkpoint = signum, checkpoint

    def __str__(self) -> str:
        return f"stopped on {signal.Signals(self.signum).name} at a safe point; resume from {self.checkpoint}"


class PreemptionSignal(pl.Callback):
    """Records SIGTERM / SIGUSR1 instead of dying.

    Args:
        stop_at_epoch_end: stop at the end of the training epoch in which the signal arrived,
            after writing ``last.ckpt`` (every job but the Dyna loop, whose safe points are its
            phases: it owns an instance with ``False``).

    Attributes:
        signum: the signal received by this process (None until one arrives).
    """

    def __init__(self, stop_at_epoch_end: bool = True):
        self.stop_at_epoch_end = stop_at_epoch_end
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every rank, main and inner trainers: replace the handlers Lightning just installed."""
        self.install()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every rank: the end of an epoch is a safe point (where ``ModelCheckpoint`` would save)."""
        if self.stop_at_epoch_end and (signum := self.requested(trainer)) is not None:
            self.stop(trainer, signum, save_last(trainer))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python allows handlers only in the main thread
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._record)
            if previous != self._record:
                self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        """Put back the handlers found by the first :meth:`install` (Lightning does this itself at
        a trainer's teardown; for use outside a trainer)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum  # nothing else here: the interrupted code may hold any lock

    def requested(self, trainer: pl.Trainer) -> int | None:
        """The stop signal if any rank received one, else None. Every rank must call this at the
        same safe point (one all-reduce), so all ranks stop together."""
        flag = torch.tensor([self.signum or 0], device=trainer.strategy.root_device)
        if trainer.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def safe_point(self, trainer: pl.Trainer, save: bool = True) -> None:
        """After SIGTERM/SIGUSR1 on any rank: write ``last.ckpt`` (``save``; else it is current
        already) and :meth:`stop`. Every rank, at the same point."""
        signum = self.requested(trainer)
        if signum is None:
            return
        path = save_last(trainer) if save else last_checkpoint_path(trainer)
        self.stop(trainer, signum, path if os.path.exists(path) else "the start (no checkpoint yet)")

    def stop(self, trainer: pl.Trainer, signum: int, checkpoint: str) -> None:
        """Requeue the SLURM job on SIGUSR1 (rank 0), then raise :class:`Preempted` on every rank."""
        log.warning(f"{signal.Signals(signum).name} received: stopped at a safe point, {checkpoint} is current")
        if signum == REQUEUE_SIGNAL and trainer.is_global_zero and SLURMEnvironment.detect():
            requeue_slurm_job()
        raise Preempted(signum, checkpoint)


def last_checkpoint_path(trainer: pl.Trainer) -> str:
    """Where ``last.ckpt`` is written: the ``ModelCheckpoint``'s folder, else ``<log dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
    return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints", "last.ckpt")


def save_last(trainer: pl.Trainer) -> str:
    """Write the full training state to ``last.ckpt`` now (call on every rank; rank 0 writes,
    atomically); returns its path."""
    path = last_checkpoint_path(trainer)
    if trainer.checkpoint_callback is not None:  # so that it overwrites this file, not last-v1.ckpt
        trainer.checkpoint_callback.last_model_path = path
    trainer.save_checkpoint(path, weights_only=False)  # weights_only=False: optimizers and loops too
    return path


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this job (array jobs as ``<array id>_<task id>``), as Lightning does."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_id}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_id else os.environ["SLURM_JOB_ID"]
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode:
        log.warning(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")
    else:
        log.warning(f"requeued SLURM job {job}")
