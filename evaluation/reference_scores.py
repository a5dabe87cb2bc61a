"""The exact-model references of every test task (DESIGN §9) and the two scores read against them:
``normalised_score = (method − random) / (ceiling − random)`` and
``adaptation_gain = (method − floor) / (ceiling − floor)``.

The ceiling and the floor are ``benchmarks/ceiling.py``'s committed results
(``docs/results/ceiling_<family>.json``); the random policy is the meta-test's own (same episodes).
A task that file does not hold with the same physics (another family, a MuJoCo task, a renamed or
changed task) gets no score rather than a wrong one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.protocol import TaskResult

RESULTS = Path(__file__).resolve().parents[1] / "docs/results"
SCORES = ("normalised_score", "adaptation_gain")


@dataclass(frozen=True)
class Reference:
    """Per-step reward of the exact-model planner with the task's true physics (``ceiling``) and
    with the training range's centre physics (``floor``)."""

    ceiling: float
    floor: float


def load_references(family: str, directory: Path = RESULTS) -> dict[tuple[str, str], Reference]:
    """``{(task name, its parameters as JSON): Reference}`` of ``family``; empty without a result file."""
    path = directory / f"ceiling_{family}.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["per_task"]
    return {(name, json.dumps(row["params"], sort_keys=True)): Reference(row["ceiling"], row["floor"])
            for name, row in rows.items()}  # fmt: skip


def task_scores(results: list[TaskResult], references: dict[tuple[str, str], Reference]) -> dict[str, dict]:
    """``{method: {task: {"normalised_score": s, "adaptation_gain": g}}}`` for every method but the
    random policy, on the tasks with a reference and a random result.

    Example:
        >>> row = lambda method, r: TaskResult(method, "t", "interpolation", {"m": 1.0}, 0, 0, r, 1, [])
        >>> refs = {("t", '{"m": 1.0}'): Reference(ceiling=0.9, floor=0.5)}
        >>> task_scores([row("ours", 0.7), row("random", 0.1)], refs)
        {'ours': {'t': {'normalised_score': 0.75, 'adaptation_gain': 0.5}}}
    """
    random = {r.task: r.reward_per_step for r in results if r.method == "random"}
    out: dict[str, dict] = {}
    for r in results:
        ref = references.get((r.task, json.dumps(r.params, sort_keys=True)))
        if r.method == "random" or ref is None or r.task not in random:
            continue
        scores = {"normalised_score": ratio(r.reward_per_step - random[r.task], ref.ceiling - random[r.task]),
                  "adaptation_gain": ratio(r.reward_per_step - ref.floor, ref.ceiling - ref.floor)}  # fmt: skip
        out.setdefault(r.method, {})[r.task] = scores
    return out


def split_scores(results: list[TaskResult], scores: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {split: {score: mean over the split's scored tasks}}}``."""
    split_of = {r.task: r.split for r in results}
    out: dict[str, dict] = {}
    for method, per_task in scores.items():
        for split in ("interpolation", "extrapolation", "all"):
            rows = [s for task, s in per_task.items() if split in ("all", split_of[task])]
            means = {k: float(np.mean(v)) for k in SCORES if (v := [row[k] for row in rows if row[k] is not None])}
            if means:
                out.setdefault(method, {})[split] = means
    return out


def ratio(num: float, den: float) -> float | None:
    """``num / den`` rounded to 4 places; None where the references do not separate (``den`` ≈ 0)."""
    return round(num / den, 4) if abs(den) > 1e-9 else None
