"""The meta-test's reports: split means, ``metatest.json``/``.md``, the learning-curve history and
the TensorBoard table, gathered from every rank."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from common.tensorboard_writing import epoch_log_step, tensorboard_logger
from envs import Task
from evaluation.protocol import TaskResult
from evaluation.reference_scores import SCORES, Reference, load_references, split_scores, task_scores


def split_means(results: list[TaskResult]) -> dict[str, dict[str, float | None]]:
    """``{method: {"interpolation": r, "extrapolation": r, "all": r}}`` mean per-step reward
    (None for a split without tasks)."""
    out: dict[str, dict[str, float | None]] = {}
    for method in dict.fromkeys(r.method for r in results):
        rows = [r for r in results if r.method == method]
        out[method] = {}
        for split in ("interpolation", "extrapolation", "all"):
            values = [r.reward_per_step for r in rows if split in ("all", r.split)]
            out[method][split] = float(np.mean(values)) if values else None
    return out


def write_reports(results: list[TaskResult], directory: str | Path, header: str,
                  references: dict[tuple[str, str], Reference] | None = None) -> str:  # fmt: skip
    """Write ``metatest.json`` and ``metatest.md`` into ``directory``; return the markdown. With the
    tasks' exact-model ``references`` (:mod:`evaluation.reference_scores`) both also give each task's
    and split's normalised score and adaptation gain."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = split_means(results)
    scores = task_scores(results, references or {})
    splits = split_scores(results, scores)
    (directory / "metatest.json").write_text(json.dumps(
        {"header": header, "summary": summary, "tasks": [asdict(r) for r in results],
         "scores": {"per_task": scores, "splits": splits}}, indent=2))  # fmt: skip
    show = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"# Meta-test — {header}",
        "",
        "| method | task | split | parameters | return (mean ± std) | per-step reward | normalised | adaptation gain |",
    ]
    lines.append("|---|---|---|---|---:|---:|---:|---:|")
    for r in results:
        params = ", ".join(f"{k}={v:g}" for k, v in r.params.items())
        score = scores.get(r.method, {}).get(r.task, {})
        lines.append(
            f"| {r.method} | {r.task} | {r.split} | {params} | {r.return_mean:.2f} ± {r.return_std:.2f} | "
            f"{r.reward_per_step:.3f} | {' | '.join(show(score.get(k)) for k in SCORES)} |"
        )
    lines += ["", "| method | interpolation | extrapolation | all |", "|---|---:|---:|---:|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {' | '.join(show(s[k]) for k in ('interpolation', 'extrapolation', 'all'))} |")
    if splits:
        lines += ["", "Against the exact-model planner (ceiling: true physics; floor: the train-range centre's), "
                  "`(method − random) / (ceiling − random)` and `(method − floor) / (ceiling − floor)`:", "",
                  "| method | score | interpolation | extrapolation | all |", "|---|---|---:|---:|---:|"]  # fmt: skip
        for method, by_split in splits.items():
            for k in SCORES:
                cells = " | ".join(show(by_split.get(s, {}).get(k)) for s in ("interpolation", "extrapolation", "all"))
                lines.append(f"| {method} | {k.replace('_', ' ')} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    (directory / "metatest.md").write_text(markdown)
    return markdown


def publish_meta_test(
    trainer: pl.Trainer, results: list[TaskResult], tasks: list[Task], method: str, header: str,
    real_transitions: int, compute: dict[str, float] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Gather every rank's ``results`` (rank ``r`` ran its :func:`datamodules.sharding.rank_share` of
    ``tasks``) on rank 0, which writes ``metatest.json``/``.md`` into the log directory, appends the
    split means to ``metatest_history.jsonl`` (one line per evaluation: the learning curve against
    ``real_transitions``), the table as TensorBoard text and, given the method's test-time
    ``compute`` (``{"time/...": seconds}``, already summed over ranks), ``test_compute.json``. The one
    publishing path of every method's meta-test. Call on every rank (the log directory is a
    broadcast); returns the ``metatest/...`` scalars of ``method`` and the compute on rank 0 (the
    caller logs them), an empty dict elsewhere."""
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    if trainer.world_size > 1:
        gathered: list[list] = [[] for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    if not trainer.is_global_zero:
        return {}
    position = {t.name: i for i, t in enumerate(tasks)}
    results = sorted(results, key=lambda r: (r.method != method, position[r.task]))
    references = load_references(tasks[0].family) if tasks else {}
    markdown = write_reports(results, log_dir, header, references)
    summaries = split_means(results)
    splits = split_scores(results, task_scores(results, references)).get(method, {})
    with open(log_dir / "metatest_history.jsonl", "a") as history:
        history.write(json.dumps({"real_transitions": real_transitions, "summary": summaries}) + "\n")
    summary = summaries[method]
    ours = [r for r in results if r.method == method]
    random = summaries.get("random", {})
    scalars = {
        "metatest/return_mean": float(np.mean([r.return_mean for r in ours])),
        "metatest/return_std": float(np.mean([r.return_std for r in ours])),
        **{f"metatest/{s}/reward_per_step": v for s, v in summary.items() if s != "all" and v is not None},
        **{f"metatest/{s}/random_reward_per_step": v for s, v in random.items() if s != "all" and v is not None},
        **{f"metatest/task/{r.task}": r.return_mean for r in ours},
        **{f"metatest/{s}/{k}": v for s, row in splits.items() if s != "all" for k, v in row.items()},
    }
    tb = tensorboard_logger(trainer)
    if tb is not None:
        tb.experiment.add_text("metatest/table", markdown, epoch_log_step(trainer))
    if compute:
        (log_dir / "test_compute.json").write_text(json.dumps({"method": method, **compute}, indent=1))
    return {**scalars, **(compute or {})}


def log_final_hparams(trainer: pl.Trainer, params: dict, latest: dict[str, float], real_transitions: int) -> None:
    """Rank 0: a run's settings ``params`` (nested mappings are flattened) in TensorBoard's *HParams*
    tab with its final meta-test per split (``latest``: the ``metatest/...`` scalars of
    :func:`publish_meta_test`; nothing without a meta-test or a ``TensorBoardLogger``)."""
    tb = tensorboard_logger(trainer)
    if tb is None or not trainer.is_global_zero or not latest:
        return
    metrics = {f"hparams/final_metatest_{split}_reward_per_step": latest[key]
               for split in ("interpolation", "extrapolation")
               if (key := f"metatest/{split}/reward_per_step") in latest}  # fmt: skip
    metrics["hparams/real_transitions"] = float(real_transitions)
    tb.log_hyperparams(params, metrics)
