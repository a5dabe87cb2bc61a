"""Where a run writes to TensorBoard: its logger and the step of an epoch's media."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The trainer's ``TensorBoardLogger``, or None when it logs elsewhere (or nowhere)."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def epoch_log_step(trainer: pl.Trainer) -> int:
    """The step of the last optimizer step (``global_step − 1``), where Lightning logs epoch-end and
    validation scalars. Images, text and embeddings of the same epoch go there too, so an
    iteration's media sit beside its scalars and a resume's ``purge_step`` (the checkpoint's
    ``global_step``) keeps them."""
    return max(trainer.global_step - 1, 0)
