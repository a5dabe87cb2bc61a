"""What the Dyna loop shows: TensorBoard's layout and HParams, the iteration's scalars, one terminal line."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl

from callbacks.dyna_state import DynaProgress
from common.tensorboard_writing import epoch_log_step, tensorboard_logger

# The Dyna loop's own settings, in the HParams tab's "dyna" group.
DYNA_SETTINGS = ("policy_epochs", "max_grad_norm", "collect_steps_per_task", "collect_tasks_per_iteration")
# Scalars also written against real transitions (x axis) under ``by_real_transitions/``.
BY_REAL_TRANSITIONS = (
    "policy/imagined_reward_per_step",
    "real/reward_per_step",
    "metatest/interpolation/reward_per_step",
    "metatest/extrapolation/reward_per_step",
)
# TensorBoard's Custom Scalars tab: the charts to read first (regexes over scalar names).
DYNA_LAYOUT = {
    "Dyna loop (x: model step; by_real_transitions/: x = real transitions)": {
        "reward per step: imagined vs real, training tasks (the model-exploitation gap)": [
            "Multiline", [r"^policy/imagined_reward_per_step$", r"^real/reward_per_step$"],
        ],
        "meta-test reward per step by split, and a uniform-random policy": [
            "Multiline", [r"^metatest/(interpolation|extrapolation)/(random_)?reward_per_step$"],
        ],
        "the same against real transitions": ["Multiline", [r"^by_real_transitions/"]],
        "model: held-out one-step MSE, heads' disagreement in imagination": [
            "Multiline", [r"^model/holdout/mse$", r"^policy/model_disagreement$"],
        ],
        "seconds per iteration by phase": ["Multiline", [r"^time/(model|policy|collect|eval)_seconds$"]],
    }
}  # fmt: skip


def add_dyna_layout(trainer: pl.Trainer) -> None:
    """Rank 0: the *Custom Scalars* layout that puts the model-exploitation gap — imagined vs real
    per-step reward of the training tasks — on one chart."""
    tb = tensorboard_logger(trainer)
    if tb is not None and trainer.is_global_zero:
        tb.experiment.add_custom_scalars(DYNA_LAYOUT)


def publish_iteration(
    trainer: pl.Trainer, gssm: pl.LightningModule, progress: DynaProgress, metrics: dict[str, float], direct: bool
) -> None:
    """An iteration's ``metrics`` (rank 0's view; the values are global or rank 0's): the terminal
    line and, on rank 0, the scalars, also against real transitions. ``direct``: an iteration a
    resume finished outside an epoch, logged at the step its scalars belong to."""
    if trainer.is_global_zero:
        line = summary_line(progress, metrics, trainer.max_epochs, trainer.callback_metrics)
        bar = trainer.progress_bar_callback
        bar.print(line) if bar is not None else print(line, flush=True)
    if direct:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=epoch_log_step(trainer))
    else:
        for name, value in metrics.items():
            gssm.log(name, value, rank_zero_only=True)
    tb = tensorboard_logger(trainer)
    if tb is not None and trainer.is_global_zero:
        for name in BY_REAL_TRANSITIONS:
            if name in metrics:
                tb.experiment.add_scalar(f"by_real_transitions/{name.replace('/', '_')}", metrics[name],
                                         progress.real_transitions)  # fmt: skip


def summary_line(progress: DynaProgress, metrics: dict[str, float], max_epochs: int, seen: dict[str, Any]) -> str:
    """The iteration's headline numbers (the terminal's view of the run); ``seen``: the trainer's
    callback metrics (the model's validation NLL).

    Example:
        >>> progress = DynaProgress()
        >>> progress.iteration, progress.real_transitions, progress.latest_metatest = 2, 1320, (1, -0.4, None)
        >>> summary_line(progress, {"time/iteration_seconds": 12.3}, max_epochs=5, seen={})
        'Dyna iteration 2/5 | 1,320 real transitions | meta-test interp -0.400 extrap – (iteration 1) | 12 s'
    """
    parts = [f"Dyna iteration {progress.iteration}/{max_epochs}", f"{progress.real_transitions:,} real transitions"]
    if "model/val/nll" in seen:
        parts.append(f"model val NLL {float(seen['model/val/nll']):.3f}")
    if "policy/imagined_reward_per_step" in metrics:
        parts.append(f"reward/step imagined {metrics['policy/imagined_reward_per_step']:.3f} "
                     f"real {metrics['real/reward_per_step']:.3f}")  # fmt: skip
    if progress.latest_metatest is not None:
        at, interp, extrap = progress.latest_metatest
        when = "" if at == progress.iteration else f" (iteration {at})"
        show = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731  (a split with no task selected)
        parts.append(f"meta-test interp {show(interp)} extrap {show(extrap)}{when}")
    parts.append(f"{metrics['time/iteration_seconds']:.0f} s")
    return " | ".join(parts)


def log_run_hparams(trainer: pl.Trainer, gssm: pl.LightningModule, loop: pl.Callback) -> None:
    """Rank 0: the run's settings — model, data, Dyna ``loop`` (:class:`callbacks.DynaLoop`), policy —
    in TensorBoard's *HParams* tab with the final meta-test per split (configs set
    ``default_hp_metric: false``, so no placeholder ``hp_metric``); nothing before a meta-test."""
    tb, progress = tensorboard_logger(trainer), loop.progress
    if tb is None or not trainer.is_global_zero or progress.latest_metatest is None:
        return
    public = lambda hparams: {k: v for k, v in hparams.items() if not k.startswith("_")}  # noqa: E731
    params = {"model": public(gssm.hparams), "data": public(trainer.datamodule.hparams),
              "dyna": {k: getattr(loop, k) for k in DYNA_SETTINGS}, "policy": public(loop.aps.hparams),
              "metatest": {k: v for k, v in vars(loop.metatest).items() if k != "tasks"}}  # fmt: skip
    _, interp, extrap = progress.latest_metatest
    metrics = {"hparams/final_metatest_interpolation_reward_per_step": interp,
               "hparams/final_metatest_extrapolation_reward_per_step": extrap,
               "hparams/real_transitions": float(progress.real_transitions)}  # fmt: skip
    tb.log_hyperparams(params, {k: v for k, v in metrics.items() if v is not None})


def note_non_finite(exception: FloatingPointError, progress: DynaProgress, checkpoint: str) -> None:
    """Name the phase, the iteration and the checkpoint (``last.ckpt``'s path) to resume from on a non-finite loss."""
    iteration = progress.iteration + (progress.running == "model")  # counted at the model epoch's end
    kept = f"the last good checkpoint {checkpoint} is intact" if os.path.exists(checkpoint) else "no checkpoint yet"
    exception.add_note(f"Dyna iteration {iteration}, {progress.running} phase: stopped on non-finite values; {kept} "
                       "(resume with --ckpt_path after lowering the learning rate or checking the data)")  # fmt: skip
