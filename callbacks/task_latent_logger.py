"""`TaskLatentLogger`: context latents of every task as a TensorBoard embedding and a figure."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger

from envs import Task


class TaskLatentLogger(pl.Callback):
    """After each validation, on rank 0 only: the mean of ``q(z_c | C_k)`` for every train and
    test task ``k`` (a fixed context of ``context_size`` transitions from its buffer), logged as

    * ``model/latent`` embedding (TensorBoard projector) with task name, split and physics
      parameters as metadata;
    * ``model/latent_vs_params`` figure: each latent dimension's mean vs each physics parameter.

    Needs a ``TensorBoardLogger``; does nothing without one. Runs no collective operation, so
    the other ranks do not wait for it.
    """

    def __init__(self, context_size: int = 50):
        self.context_size = context_size

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return
        tasks, cx, cy = trainer.datamodule.task_contexts(self.context_size)
        with torch.no_grad():
            means = pl_module.infer_context(cx.to(pl_module.device), cy.to(pl_module.device)).q_zc.mean.cpu()
        names = trainer.datamodule.family.param_names
        metadata = [[t.name, t.split, *(f"{t.parameters[n]:.3g}" for n in names)] for t in tasks]
        step = trainer.global_step
        tb.experiment.add_embedding(
            means,
            metadata=metadata,
            metadata_header=["task", "split", *names],
            tag="model/latent",
            global_step=step,
        )
        tb.experiment.add_figure("model/latent_vs_params", latent_figure(tasks, means, names), step, close=False)


def latent_figure(tasks: list[Task], means: torch.Tensor, param_names: tuple[str, ...]) -> Figure:
    """One panel per physics parameter: latent means ``[T, Z]`` against the parameter, by split."""
    fig = Figure(figsize=(4 * len(param_names), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    markers = {"train": "o", "interpolation": "s", "extrapolation": "^"}
    for i, name in enumerate(param_names):
        ax = fig.add_subplot(1, len(param_names), i + 1)
        values = torch.tensor([t.parameters[name] for t in tasks])
        for d in range(means.shape[1]):
            color = f"C{d % 10}"
            for split, marker in markers.items():
                sel = torch.tensor([t.split == split for t in tasks])
                label = f"z[{d}]" if split == "train" and i == 0 else None
                ax.scatter(values[sel], means[sel, d], c=color, marker=marker, s=14, label=label)
        ax.set_xlabel(name)
        ax.set_ylabel("latent mean")
    if len(param_names):
        fig.axes[0].legend(fontsize=6, ncol=2, title="o train, ■ interp, ▲ extrap", title_fontsize=6)
    return fig
