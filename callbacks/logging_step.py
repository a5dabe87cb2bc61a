"""`epoch_log_step`: the TensorBoard step at which Lightning writes the current epoch's scalars."""

from __future__ import annotations

import pytorch_lightning as pl


def epoch_log_step(trainer: pl.Trainer) -> int:
    """The step of the last optimizer step (``global_step − 1``), where Lightning logs epoch-end and
    validation scalars. Images, text and embeddings of the same epoch go there too, so an
    iteration's media sit beside its scalars and a resume's ``purge_step`` (the checkpoint's
    ``global_step``) keeps them."""
    return max(trainer.global_step - 1, 0)
