"""`TaskLatentLogger`: context latents of every task as a TensorBoard embedding and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.tensorboard_writing import epoch_log_step, tensorboard_logger
from common.validation import INTEGER_1, Range, check_settings
from envs import Task

PROJECTOR_DIR = "projector"
SPLIT_STYLE = {"train": ("o", "C0"), "interpolation": ("s", "C1"), "extrapolation": ("^", "C3")}


class TaskLatentLogger(pl.Callback):
    """After each validation, on rank 0 only: the mean of ``q(z_c | C_k)`` for every train and
    test task ``k`` (a fixed context of ``context_size`` transitions from its buffer), logged as

    * ``model/latent`` embedding in TensorBoard's *Projector*, with task name, split and physics
      parameters as metadata: one embedding, rewritten at each validation (the latest), in
      ``<log dir>/projector/`` — not one folder per step;
    * ``model/latent_readout`` figure: per physics parameter, the value a linear map of the latent
      (least squares on the training tasks) reads out against the true value, by split, with the
      training tasks' R² — three series a panel, readable at TensorBoard's default image size.

    Needs a ``TensorBoardLogger``; does nothing without one. Runs no collective operation, so
    the other ranks do not wait for it.
    """

    RANGES: ClassVar[dict[str, Range]] = {"context_size": INTEGER_1}

    def __init__(self, context_size: int = 50):
        check_settings(TaskLatentLogger, locals())
        self.context_size = context_size

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        tb = tensorboard_logger(trainer)
        if tb is None:
            return
        tasks, cx, cy = trainer.datamodule.task_contexts(self.context_size)
        with torch.no_grad():
            means = pl_module.infer_context(cx.to(pl_module.device), cy.to(pl_module.device)).q_zc.mean.cpu()
        names = trainer.datamodule.family.param_names
        step = epoch_log_step(trainer)
        write_projector(Path(tb.log_dir), means, tasks, names, f"model/latent (step {step})")
        tb.experiment.add_figure("model/latent_readout", readout_figure(tasks, means, names), step, close=True)


def write_projector(log_dir: Path, vectors: torch.Tensor, tasks: list[Task], param_names: tuple[str, ...],
                    name: str) -> None:  # fmt: skip
    """The one embedding of the run for TensorBoard's Projector: ``vectors [T, Z]`` with a row of
    metadata per task, in ``log_dir/projector/``, and a ``projector_config.pbtxt`` naming only it."""
    folder = log_dir / PROJECTOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tensors.tsv").write_text("".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in vectors.tolist()))
    header = "\t".join(["task", "split", *param_names])
    rows = ["\t".join([t.name, t.split, *(f"{t.parameters[n]:.3g}" for n in param_names)]) for t in tasks]
    (folder / "metadata.tsv").write_text("\n".join([header, *rows]) + "\n")
    (log_dir / "projector_config.pbtxt").write_text(
        "embeddings {\n"
        f'  tensor_name: "{name}"\n'
        f'  tensor_path: "{PROJECTOR_DIR}/tensors.tsv"\n'
        f'  metadata_path: "{PROJECTOR_DIR}/metadata.tsv"\n'
        "}\n"
    )


def linear_readout(means: torch.Tensor, values: torch.Tensor, fit_on: torch.Tensor) -> torch.Tensor:
    """Least-squares ``[z, 1] → value`` fitted on the rows ``fit_on`` (a bool mask or indices) of
    ``means [T, Z]``; returns the readout of every row ``[T]`` in ``values``' dtype."""
    x = torch.cat([means, torch.ones(len(means), 1, dtype=means.dtype)], dim=1).double()
    coef = torch.linalg.lstsq(x[fit_on], values[fit_on, None].double()).solution
    return (x @ coef).squeeze(1).to(values.dtype)


def r_squared(pred: torch.Tensor, values: torch.Tensor) -> float:
    """``1 − SSE / SST`` (−inf … 1; 0 is as good as predicting the mean)."""
    total = ((values - values.mean()) ** 2).sum().clamp_min(1e-12)
    return float(1 - ((pred - values) ** 2).sum() / total)


def readout_figure(tasks: list[Task], means: torch.Tensor, param_names: tuple[str, ...]) -> Figure:
    """One panel per physics parameter, stacked: linear readout of the latent ``means [T, Z]`` vs
    the true value, markers by split, the identity line, and R² on the training tasks (fitted) and
    on the interpolation tasks (held out) in the title.
    340 pixels wide, so TensorBoard's image card shows it unscaled."""
    rows = max(len(param_names), 1)
    fig = Figure(figsize=(3.4, 2.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    train = torch.tensor([t.split == "train" for t in tasks])
    interp = torch.tensor([t.split == "interpolation" for t in tasks])
    for i, name in enumerate(param_names):
        ax = fig.add_subplot(rows, 1, i + 1)
        values = torch.tensor([float(t.parameters[name]) for t in tasks])
        pred = linear_readout(means, values, train)
        r2_train, r2_interp = r_squared(pred[train], values[train]), r_squared(pred[interp], values[interp])
        for split, (marker, color) in SPLIT_STYLE.items():
            sel = torch.tensor([t.split == split for t in tasks])
            ax.scatter(values[sel], pred[sel], marker=marker, c=color, s=22, label=split)
        low, high = float(values.min()), float(values.max())
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_title(f"{name}: R² train {r2_train:.2f}, interp {r2_interp:.2f}", fontsize=10)
        ax.set_xlabel(f"true {name}", fontsize=9)
        ax.set_ylabel("read out of z_c", fontsize=9)
        ax.tick_params(labelsize=8)
    if len(param_names):
        fig.axes[0].legend(fontsize=8)
    return fig
