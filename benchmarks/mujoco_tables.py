"""The MuJoCo rows of Table 2, in the paper's unit: the return of a 1000-step episode (docs/DESIGN.md §5).

    lines = returns_table([r for r in runs if r["env"] in MUJOCO_ENVS])

Reads the same per-run raw results as :mod:`metatest_tables` (``metatest/<env>/<method>_seed<k>.json`` of
``benchmarks/metatest_results.py``); nothing is rerun. A split's return is the mean over its test
tasks and the seeds; beside it the std across test tasks (of each task's mean over seeds) and across
seeds (of each seed's split mean), as the MuJoCo issue asks.
"""

from __future__ import annotations

import statistics

from metatest_tables import METHODS
from report_sections import NOT_MEASURED

MUJOCO_ENVS = ("half_cheetah", "slim_humanoid")
# the campaign the MuJoCo issue asks for: 3 seeds of GSSM+APS, 2 of every other method
SEEDS = {"gssm_aps": (0, 1, 2)}
OTHER_SEEDS = (0, 1)
# the paper's Table 2 (Wang & van Hoof 2022), returns on its interpolation tasks; its "GSSM" is our GSSM without
# amortization
PAPER = {
    "half_cheetah": {"gssm_aps": 1597.4, "gssm_nonamortized": 1306.6, "m_dpilco": 862.0, "mlsm_v0_aps": 827.3,
                     "mlsm_v1_aps": 1226.8, "l2a": -17.9},
    "slim_humanoid": {"gssm_aps": 1641.8, "gssm_nonamortized": 717.1, "m_dpilco": 596.0, "mlsm_v0_aps": 285.9,
                      "mlsm_v1_aps": 745.6, "l2a": 124.9},
}  # fmt: skip
RETURN_TARGETS = {"half_cheetah": 1600.0, "slim_humanoid": 1650.0}  # GSSM+APS, interpolation, 3 seeds
WALL_TARGET_S, MEMORY_TARGET_GIB, TRANSITIONS_TARGET = 5400, 8.0, 250_000  # the GSSM+APS main job on 2 CPU cores


def campaign() -> list[tuple[str, str, bool, int]]:
    """Every (env, method, long, seed) the MuJoCo issue asks for (equal budget only)."""
    return [(env, method, False, seed) for env in MUJOCO_ENVS for method in METHODS
            for seed in SEEDS.get(method, OTHER_SEEDS)]  # fmt: skip


def task_returns(run: dict, method: str, split: str) -> dict[str, float]:
    """``{task: mean return}`` of ``method`` on the ``split`` tasks of one run's final meta-test."""
    return {t["task"]: t["return_mean"] for t in run["final"]["tasks"] if t["method"] == method and t["split"] == split}


def split_return(group: list[dict], method: str, split: str) -> tuple[float, float, float]:
    """Mean return over the split's tasks and the runs of ``group``; std across tasks; std across runs."""
    per_run = [task_returns(r, method, split) for r in group]
    tasks = list(per_run[0])
    per_task = [statistics.mean(p[t] for p in per_run) for t in tasks]
    per_seed = [statistics.mean(p.values()) for p in per_run]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    return statistics.mean(per_task), sd(per_task), sd(per_seed)


def cell(group: list[dict], method: str, split: str) -> str:
    mean, across_tasks, across_seeds = split_return(group, method, split)
    return f"{mean:.1f} ± {across_tasks:.1f} / ± {across_seeds:.1f}"


def returns_table(runs: list[dict]) -> list[str]:
    """Per env × method: the return per split (± across test tasks / ± across seeds), the paper's, the
    run's real transitions, wall, peak memory and evaluation episodes per task; the random policy per env."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["env"], r["method"]), []).append(r)
    lines = ["| env | method | real transitions | seeds | interpolation | extrapolation | paper (interpolation) "
             "| wall per run | peak memory | episodes per task |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for (env, method), group in groups.items():
        transitions = statistics.mean(g["real_transitions"] for g in group)
        paper = PAPER[env].get(method)
        walls = [g["wall_s"] for g in group if g.get("wall_s") is not None]
        peaks = [g["peak_rss_gib"] for g in group if g.get("peak_rss_gib") is not None]
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == method)
        lines.append(f"| {env} | {method} | {transitions:,.0f} | {len(group)} | {cell(group, method, 'interpolation')} "
                     f"| {cell(group, method, 'extrapolation')} | {'—' if paper is None else f'{paper:.1f}'} "
                     f"| {f'{statistics.mean(walls):.0f} s' if walls else '—'} "
                     f"| {f'{max(peaks):.2f} GiB' if peaks else '—'} | {episodes} |")  # fmt: skip
    for env in dict.fromkeys(r["env"] for r in runs):
        in_env = [r for r in runs if r["env"] == env]
        group = [r for r in in_env if r["method"] == "gssm_aps"] or in_env
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == "random")
        lines.append(f"| {env} | random | 0 | {len(group)} | {cell(group, 'random', 'interpolation')} "
                     f"| {cell(group, 'random', 'extrapolation')} | — | — | — | {episodes} |")  # fmt: skip
    return lines


def target_lines(runs: list[dict]) -> list[str]:
    """The MuJoCo issue's GSSM+APS targets per family: the interpolation return on 3 seeds, and the main
    job's wall, memory and real transitions on 2 CPU cores (the worst run)."""
    lines = []
    for env, lo in RETURN_TARGETS.items():
        ours = [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        target = f"{env} GSSM+APS interpolation return ≥ {lo:.0f} on 3 seeds, ≤ {TRANSITIONS_TARGET:,} real transitions"
        budget = f"{env} GSSM+APS main job ≤ {WALL_TARGET_S} s and ≤ {MEMORY_TARGET_GIB:g} GiB on 2 CPU cores"
        if not ours:
            lines += [f"| {target} | {NOT_MEASURED} |", f"| {budget} | {NOT_MEASURED} |"]
            continue
        mean, _, _ = split_return(ours, "gssm_aps", "interpolation")
        transitions = max(r["real_transitions"] for r in ours)
        met = mean >= lo and len(ours) >= 3 and transitions <= TRANSITIONS_TARGET
        seeds = "" if len(ours) >= 3 else f" (only {len(ours)} of 3 seeds)"
        lines.append(f"| {target} | {mean:.1f} from {len(ours)} seed(s), {transitions:,.0f} transitions | "
                     f"{'met' if met else 'missed' + seeds} |")  # fmt: skip
        wall = max(r["wall_s"] for r in ours)
        peaks = [r["peak_rss_gib"] for r in ours if r.get("peak_rss_gib") is not None]
        if not peaks:
            lines.append(f"| {budget} | {wall:.0f} s, peak memory not recorded | missed: memory not measured |")
            continue
        jobs = max(r.get("jobs", 1) for r in ours)
        ran = f", {jobs} runs at once" if jobs > 1 else ""
        met = wall <= WALL_TARGET_S and max(peaks) <= MEMORY_TARGET_GIB
        lines.append(f"| {budget} | {wall:.0f} s, {max(peaks):.2f} GiB (worst run{ran}) | "
                     f"{'met' if met else 'missed'} |")  # fmt: skip
    return lines
