"""The policy phase of a Dyna iteration: APS fitted on imagined rollouts of the current model (DESIGN §4)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytorch_lightning as pl
import torch

from datamodules.transition_datamodule import TransitionDataModule
from modules.methods.gssm_aps.aps import APSModule, ImaginationSource
from modules.models.meta_dynamics_model import MetaDynamicsModel


def fit_policy_in_model(
    aps: APSModule,
    model: MetaDynamicsModel,
    data: TransitionDataModule,
    shard: torch.Tensor,
    outer: pl.Trainer,
    epochs: int,
    max_grad_norm: float,
    callbacks: list[pl.Callback] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Fit ``epochs`` PPO iterations of ``aps`` on imagined rollouts of ``model`` (frozen, in eval
    mode meanwhile) from the buffers of ``data``, this rank's ``shard`` of the training tasks
    ``[T_r]``, with a ``Trainer`` on the ``outer`` one's accelerator, devices and nodes (DDP when it
    has several ranks). Call on every rank. Lightning's banners and bars stay off unless
    ``verbose``.

    Returns:
        the last epoch's ``policy/...`` metrics, averaged over ranks.
    """
    aps.source = ImaginationSource(model, data.buffer, shard, data.family.params_tensor(data.train_tasks))
    with lightning_info_silenced(not verbose):
        inner = pl.Trainer(
            accelerator=outer.accelerator,
            devices=outer.num_devices,
            num_nodes=outer.num_nodes,
            strategy="ddp" if outer.world_size > 1 else "auto",
            max_epochs=epochs,
            gradient_clip_val=max_grad_norm,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=verbose and outer.progress_bar_callback is not None,
            num_sanity_val_steps=0,
            callbacks=callbacks,
        )
        was_training = model.training
        model.eval()
        try:
            inner.fit(aps)
        finally:
            model.train(was_training)
    return {k: float(v) for k, v in inner.callback_metrics.items() if k.startswith("policy/")}


@contextlib.contextmanager
def lightning_info_silenced(enabled: bool = True) -> Iterator[None]:
    """Lightning's INFO messages (device banners, "`Trainer.fit` stopped") off inside the block."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    if enabled:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
