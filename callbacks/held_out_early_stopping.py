"""`HeldOutEarlyStopping`: a model epoch that ends once the held-out error stops improving."""

from __future__ import annotations

import math
from typing import ClassVar

import pytorch_lightning as pl

from common.validation import INTEGER_1, Range, check_settings
from datamodules.transition_datamodule import TransitionDataModule
from modules.models.meta_dynamics_model import MetaDynamicsModel


class HeldOutEarlyStopping(pl.Callback):
    """Trains each epoch of a :class:`MetaDynamicsModel` to convergence (DESIGN §2.9): before the
    epoch's first batch and every ``check_every`` batches the model scores the datamodule's held-out
    slice of the training tasks (:meth:`MetaDynamicsModel.holdout_score` on
    :meth:`TransitionDataModule.holdout_batches`: contexts from the training part, targets never
    trained on), and once ``patience`` checks in a row did not beat the best score by
    ``min_improvement`` (relative) the datamodule's stream ends (:meth:`TransitionDataModule.end_train_epoch`:
    the batch or two already fetched still train, and the epoch-end validation still runs). The
    datamodule's ``batches_per_epoch`` is the cap. The held-out slice and the weights are identical
    on every rank, so all ranks stop together. Logs ``model/holdout/mse`` (the last check) and
    ``model/train/batches`` at the epoch's end.

    Args:
        check_every: batches between two checks.
        patience: checks without improvement before the epoch ends.
        min_improvement: the relative improvement over the best score that counts (0: any decrease).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "check_every": INTEGER_1, "patience": INTEGER_1,
        "min_improvement": Range(low=0, high=1, open_high=True, special={0: "any decrease counts"}),
    }  # fmt: skip

    def __init__(self, check_every: int = 50, patience: int = 3, min_improvement: float = 0.01):
        check_settings(HeldOutEarlyStopping, locals())
        self.check_every, self.patience, self.min_improvement = check_every, patience, min_improvement
        self.best, self.last, self.bad_checks = math.inf, math.nan, 0
        self.batches: list = []  # the held-out batches of this epoch
        self._epoch_first_step = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(data, TransitionDataModule):
            raise TypeError("HeldOutEarlyStopping needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if not data.hparams.holdout_every:
            raise ValueError("HeldOutEarlyStopping needs data.holdout_every >= 2 (a held-out part of the buffers)")

    def on_train_epoch_start(self, trainer: pl.Trainer, model: MetaDynamicsModel) -> None:
        self.batches = trainer.datamodule.holdout_batches()
        self.best, self.bad_checks = math.inf, 0
        self._epoch_first_step = trainer.global_step

    def on_train_batch_start(self, trainer: pl.Trainer, model: MetaDynamicsModel, batch, batch_idx: int) -> None:
        if batch_idx % self.check_every or self.bad_checks >= self.patience:
            return
        score = model.holdout_score(self.batches)
        if score < self.best * (1 - self.min_improvement):
            self.best, self.bad_checks = score, 0
        else:
            self.bad_checks += 1
        self.last = score
        if self.bad_checks >= self.patience:
            trainer.datamodule.end_train_epoch()

    def on_train_epoch_end(self, trainer: pl.Trainer, model: MetaDynamicsModel) -> None:
        # identical on every rank; the mean over ranks is that value
        model.log("model/holdout/mse", self.last, sync_dist=True)
        model.log("model/train/batches", float(trainer.global_step - self._epoch_first_step), sync_dist=True)
