"""Table 2's tables and learning curves, from the per-run raw results of ``benchmarks/metatest_results.py``.

    markdown(sort_runs(json.loads(p.read_text()) for p in Path("docs/results/metatest").glob("*/*.json")))

A run's file is ``<env>/<method>[_long]_seed<k>.json``: its final meta-test (per task, per split),
its learning curve (``history``), ``wall_s`` and, for the Dyna methods, the exploitation gap. Every
function here reads those dicts only (no torch, no rerun), so the report renders in seconds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import numpy as np

DYNA_METHODS = ("gssm_aps", "mlsm_v0_aps", "mlsm_v1_aps")  # the Dyna loop with GSSM or an MLSM ablation
TEST_TIME = ("gssm_nonamortized", "gssm_mpc")  # train.py test on a GSSM+APS checkpoint
MODEL_FREE = ("dr_ppo", "pe_ppo")
METHODS = ("gssm_aps", *TEST_TIME, *DYNA_METHODS[1:], "m_dpilco", "l2a", *MODEL_FREE)
SPLITS = ("interpolation", "extrapolation", "all")
# the campaign of Table 2: benchmarks/metatest_results.py's defaults
ENVS, SEEDS, LONG_METHODS = ("acrobot", "cartpole_swingup"), (0, 1, 2), ("dr_ppo",)


def run_name(method: str, long: bool, seed: int) -> str:
    """The file stem of one run: ``<method>[_long]_seed<k>``."""
    return f"{method}{'_long' if long else ''}_seed{seed}"


def campaign() -> list[tuple[str, str, bool, int]]:
    """Every (env, method, long, seed) of the Table 2 campaign."""
    return [(env, method, long, seed) for env in ENVS for method in METHODS
            for long in ((False, True) if method in LONG_METHODS else (False,)) for seed in SEEDS]  # fmt: skip


def sort_runs(runs: Iterable[dict]) -> list[dict]:
    """The runs in the tables' order: env, method as in :data:`METHODS`, budget, seed."""
    return sorted(runs, key=lambda r: (r["env"], METHODS.index(r["method"]), r["long"], r["seed"]))


def final_metric(run: dict, method: str, split: str) -> float:
    return run["final"]["summary"][method][split]


def transitions_to_reach(history: list[dict], method: str, level: float) -> float | None:
    """Real transitions at which the learning curve (mean per-step reward, all test tasks) first
    reaches ``level``, linearly interpolated between evaluations; None if it never does."""
    xs = [h["real_transitions"] for h in history]
    ys = [h["summary"][method]["all"] for h in history]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y >= level:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (level - y0) / (y - y0) * (x - x0))
    return None


def against_gssm_aps(runs: list[dict]) -> list[str]:
    """Each method's final mean per-step reward (all test tasks) against GSSM+APS's at the equal budget:
    the difference of the means over seeds, called a win or a loss only when it exceeds both methods'
    std across seeds (and both have two seeds or more)."""
    lines = ["Against GSSM+APS (equal budget, all test tasks, mean over seeds; a win or a loss only where the",
             "difference exceeds both methods' std across seeds, with two seeds or more):", "",
             "| env | method | method − GSSM+APS | verdict |", "|---|---|---:|---|"]  # fmt: skip
    for env in dict.fromkeys(r["env"] for r in runs):
        ours = [final_metric(r, "gssm_aps", "all") for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        if not ours:
            continue
        for method in METHODS[1:]:
            theirs = [final_metric(r, method, "all") for r in runs
                      if r["env"] == env and r["method"] == method and not r["long"]]  # fmt: skip
            if not theirs:
                continue
            diff = statistics.mean(theirs) - statistics.mean(ours)
            if min(len(ours), len(theirs)) < 2:
                verdict = "one seed: no verdict"
            else:
                noise = max(statistics.stdev(v) for v in (ours, theirs))
                verdict = "no clear difference" if abs(diff) <= noise else ("wins" if diff > 0 else "loses")
            lines.append(f"| {env} | {method} | {diff:+.3f} | {verdict} |")
    return lines


def test_time_compute(group: list[dict]) -> str:
    """A test-time method's extra compute, mean over seeds: seconds of search or of embedding inference
    per test task, or milliseconds of planning per action; "—" for a method that only runs its policy."""
    computes = [g["test_compute"] for g in group if "test_compute" in g]
    if not computes:
        return "—"
    if "time/test_seconds_per_action" in computes[0]:
        per_action = statistics.mean(c["time/test_seconds_per_action"] for c in computes)
        return f"{per_action * 1e3:.1f} ms planning per action"
    if "time/inference_seconds_per_task" in computes[0]:
        inference = statistics.mean(c["time/inference_seconds_per_task"] for c in computes)
        return f"{inference:.1f} s embedding inference per task"
    return f"{statistics.mean(c['time/test_seconds_per_task'] for c in computes):.1f} s search per task"


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def results_table(runs: list[dict]) -> list[str]:
    """Per env × method × budget, mean ± std across seeds, and the random policy per env."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["env"], r["method"], r["long"]), []).append(r)
    lines = [
        "Wall per run: meta-training for the methods that train; the meta-test alone for the test-time methods",
        "(which start from the GSSM+APS run of the same seed). Test-time compute: the work a method does per test",
        "task or per action beyond one policy forward pass (the amortized methods do none).", "",
        "| env | method | budget | real transitions | seeds | interpolation | extrapolation | all | wall per run "
        "| test-time compute | episodes per task |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]  # fmt: skip
    for (env, method, long), group in groups.items():
        transitions = statistics.mean(g["history"][-1]["real_transitions"] for g in group)
        cells = [mean_std([final_metric(g, method, s) for g in group]) for s in SPLITS]
        walls = [g["wall_s"] for g in group if g.get("wall_s") is not None and not math.isnan(g["wall_s"])]
        wall_cell = f"{statistics.mean(walls):.0f} s" if walls else "—"
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == method)
        lines.append(f"| {env} | {method} | {'long' if long else 'equal'} | {transitions:,.0f} | {len(group)} | "
                     f"{' | '.join(cells)} | {wall_cell} | {test_time_compute(group)} | {episodes} |")  # fmt: skip
    for env in dict.fromkeys(r["env"] for r in runs):
        group = [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        group = group or [r for r in runs if r["env"] == env]
        cells = [mean_std([final_metric(g, "random", s) for g in group]) for s in SPLITS]
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == "random")
        lines.append(f"| {env} | random | — | 0 | {len(group)} | {' | '.join(cells)} | — | — | {episodes} |")
    return lines


def gssm_aps_runs(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """``(env, its GSSM+APS runs)`` for every env, in first-seen order, that has any."""
    by_env = {env: [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"] for env in
              dict.fromkeys(r["env"] for r in runs)}  # fmt: skip
    return [(env, group) for env, group in by_env.items() if group]


def sample_ratios(runs: list[dict]) -> list[str]:
    """Real transitions a long-budget model-free run needs to reach GSSM+APS's final reward."""
    lines = ["Real transitions a model-free method needs to reach GSSM+APS's final mean per-step reward (all test",
             "tasks, mean over seeds), from its long-budget learning curve, as a multiple of GSSM+APS's budget",
             "(interpolated between evaluations; a curve already above it at its first evaluation counts that",
             "evaluation's transitions, an upper bound):", "",
             "| env | GSSM+APS reward | GSSM+APS transitions | method | transitions to reach (per seed) | ratio |",
             "|---|---:|---:|---|---|---:|"]  # fmt: skip
    for env, ours in gssm_aps_runs(runs):
        level = statistics.mean(final_metric(r, "gssm_aps", "all") for r in ours)
        budget = statistics.mean(r["history"][-1]["real_transitions"] for r in ours)
        for method in MODEL_FREE:
            group = [r for r in runs if r["env"] == env and r["method"] == method and r["long"]]
            if not group:
                continue
            needed = [transitions_to_reach(r["history"], method, level) for r in group]
            per_seed = ", ".join("not reached" if n is None else f"{n:,.0f}" for n in needed)
            lasts = [r["history"][-1]["real_transitions"] for r in group]
            per_seed_ratio = [f"{n / budget:.1f}×" if n is not None else f"> {last / budget:.1f}×"
                              for n, last in zip(needed, lasts, strict=True)]  # fmt: skip
            reached = [n for n in needed if n is not None]
            ratio = (f"{statistics.mean(reached) / budget:.1f}×" if len(reached) == len(needed)
                     else f"per seed: {', '.join(per_seed_ratio)}")  # fmt: skip
            lines.append(f"| {env} | {level:.3f} | {budget:,.0f} | {method} | {per_seed} | {ratio} |")
    return lines


def stability(runs: list[dict]) -> list[str]:
    """GSSM+APS's final meta-test against each seed's best evaluation (the no-collapse target)."""
    lines = ["No collapse (issue target: on every seed the final meta-test is within 0.03 of that seed's best",
             "evaluation, and the std of the final across seeds is ≤ 0.03; mean per-step reward, all test tasks):", "",
             "| env | method | final per seed | best per seed | largest drop | std across seeds | target |",
             "|---|---|---|---|---:|---:|---|"]  # fmt: skip
    for env, group in gssm_aps_runs(runs):
        finals = [final_metric(g, "gssm_aps", "all") for g in group]
        bests = [max(h["summary"]["gssm_aps"]["all"] for h in g["history"]) for g in group]
        drop = max(b - f for b, f in zip(bests, finals, strict=True))
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        met = "met" if drop <= 0.03 and sd <= 0.03 else "missed"
        lines.append(f"| {env} | gssm_aps | {', '.join(f'{f:.3f}' for f in finals)} | "
                     f"{', '.join(f'{b:.3f}' for b in bests)} | {drop:.3f} | {sd:.3f} | {met} |")  # fmt: skip
    return lines


def markdown(runs: list[dict]) -> str:
    """The results table, each method against GSSM+APS, the sample ratios and the stability table."""
    return "\n".join([*results_table(runs), "", *against_gssm_aps(runs), "", *sample_ratios(runs), "",
                      *stability(runs)])  # fmt: skip


def curves(runs: list[dict], env: str, points: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method (long budget for the model-free ones): a common transition grid and the mean and
    std across seeds of the meta-test per-step reward (all test tasks) interpolated onto it."""
    out = {}
    for method in (m for m in METHODS if m not in TEST_TIME):  # the test-time methods have one point
        group = [r for r in runs if r["env"] == env and r["method"] == method]
        if any(r["long"] for r in group):
            group = [r for r in group if r["long"]]
        if not group:
            continue
        histories = [
            ([h["real_transitions"] for h in r["history"]], [h["summary"][method]["all"] for h in r["history"]])
            for r in group
        ]
        lo = max(xs[0] for xs, _ in histories)
        hi = min(xs[-1] for xs, _ in histories)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
        values = np.stack([np.interp(grid, xs, ys) for xs, ys in histories])
        out[method] = (grid, values.mean(0), values.std(0))
    return out
