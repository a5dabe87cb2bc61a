"""`NormalizerFitting`: a meta dynamics model's normalisers fitted on its datamodule's training data."""

from __future__ import annotations

import pytorch_lightning as pl

from datamodules.transition_datamodule import TransitionDataModule
from modules.models.meta_dynamics_model import MetaDynamicsModel


class NormalizerFitting(pl.Callback):
    """Fits the ``[s, a]`` and ``Δs`` normalisers of a :class:`MetaDynamicsModel` on every training
    transition its :class:`TransitionDataModule` holds (:meth:`~TransitionDataModule.model_training_data`):
    at every training epoch's start, or only where they are not fitted yet (the first validation
    or epoch of a run that did not start from a checkpoint). Every rank holds every task's buffer,
    so all ranks fit identical statistics.

    Refitted, the normalisers follow the data the policy collects, whose ``Δs`` spread grows far
    beyond that of the random-action data, and each epoch then trains to convergence on the held-out
    slice (:class:`callbacks.HeldOutEarlyStopping`) in the new units (DESIGN §2.9).

    Args:
        refit_every_epoch: refit at the start of every training epoch (the Dyna loop's data
            grows); False: fit once, on the data of the run's first validation or epoch.

    Also checks that the model and the data are of the same task family (``--ckpt_path`` may
    bring a model of another one).
    """

    def __init__(self, refit_every_epoch: bool = True):
        self.refit_every_epoch = refit_every_epoch

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if not isinstance(pl_module, MetaDynamicsModel) or not isinstance(data, TransitionDataModule):
            raise TypeError("NormalizerFitting needs a MetaDynamicsModel fitted on a TransitionDataModule")
        if data.hparams.env != pl_module.hparams.env:
            raise ValueError(
                f"model.env={pl_module.hparams.env!r} (from the config, or from the checkpoint given as "
                f"--ckpt_path) but data.env={data.hparams.env!r}: model, data and checkpoint must be of the same env"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, model: MetaDynamicsModel) -> None:
        if self.refit_every_epoch or not model.x_normalizer.fitted:
            model.fit_normalizers(*trainer.datamodule.model_training_data())

    def on_validation_epoch_start(self, trainer: pl.Trainer, model: MetaDynamicsModel) -> None:
        if not model.x_normalizer.fitted:
            model.fit_normalizers(*trainer.datamodule.model_training_data())
