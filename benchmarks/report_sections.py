"""The report's cross-cutting sections: the targets, the runs a campaign still lacks, and the provenance
of every raw result (command, commit, date, wall, machine; "not recorded" where a file predates them).

    print("\n".join(provenance_lines({"throughput.json": json.loads(Path(p).read_text())}, "docs/results")))
"""

from __future__ import annotations

import statistics
from pathlib import Path

from metatest_tables import final_metric
from report_tables import SCALING_MEMORY_GIB, per_task_cost, probe_targets

IMAGINATION_TARGET = 200_000
METATEST_TARGETS = {"acrobot": (-0.50, -0.50), "cartpole_swingup": (0.82, 0.72)}  # the adaptation issue, 3 seeds
DOUBLING_TARGET = 0.01  # DESIGN §9: twice the ceiling's compute changes it by less than this per step
MAIN_JOB_TARGETS = (600, 50_000)  # the sample-efficiency issue: ≤ 10 minutes on 2 cores, ≤ 50,000 transitions
# known explanations of a missed target, said once; the numbers behind them are in docs/TUNING.md
KNOWN_CAUSES = {
    "imagination": "Throughput gives the share of the FLOP-bound limit achieved, Provenance the machine and what "
    "ran beside it",
    "acrobot": "what was tried and measured: docs/TUNING.md",
    "cartpole_swingup": "what was tried and measured: docs/TUNING.md",
}
NOT_MEASURED = "not measured | its raw results are not in the repository (see its section)"


def status(met: bool, cause: str | None = None) -> str:
    return "met" if met else f"missed: {cause}" if cause else "missed"


def targets_lines(tp: dict | None, runs: list[dict], ceilings: list[dict], probes: list[dict],
                  main_jobs: list[dict], scaling: dict | None) -> list[str]:  # fmt: skip
    """One row per target of the issues, measured from the raw results or marked as not measured."""
    lines = ["| target | measured | status |", "|---|---|---|"]
    target = f"imagined transitions/s ≥ {IMAGINATION_TARGET:,} (CPU, default acrobot sizes)"
    if tp is None:
        lines.append(f"| {target} | {NOT_MEASURED} |")
    else:
        cpu = next(r for r in tp["imagination"] if r["device"] == "cpu")
        met = cpu["transitions_per_s"] >= IMAGINATION_TARGET
        lines.append(f"| {target} | {cpu['transitions_per_s']:,.0f} | {status(met, KNOWN_CAUSES['imagination'])} |")
    for env, (lo_i, lo_e) in METATEST_TARGETS.items():
        target = f"{env} GSSM+APS per-step reward interp ≥ {lo_i:.2f}, extrap ≥ {lo_e:.2f}"
        ours = [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        if not ours:
            lines.append(f"| {target} | {NOT_MEASURED} |")
            continue
        interp = statistics.mean(final_metric(r, "gssm_aps", "interpolation") for r in ours)
        extrap = statistics.mean(final_metric(r, "gssm_aps", "extrapolation") for r in ours)
        met = interp >= lo_i and extrap >= lo_e
        lines.append(f"| {target} ({len(ours)} seeds) | {interp:.3f} / {extrap:.3f} | "
                     f"{status(met, KNOWN_CAUSES[env])} |")  # fmt: skip
    wall_target, transitions_target = MAIN_JOB_TARGETS
    target = f"main job ≤ {wall_target} s and ≤ {transitions_target:,} real transitions"
    classic = [r for r in main_jobs if r["env"] in METATEST_TARGETS and "smoke" not in r["config"]]
    if not classic:
        lines.append(f"| {target} | {NOT_MEASURED} |")
    for r in classic:
        met = r["wall_s"] <= wall_target and r["transitions"] <= transitions_target
        lines.append(f"| {r['config']}: {target} | {r['wall_s']:.0f} s, {r['transitions']:,.0f} | {status(met)} |")
    if not ceilings:
        lines.append(f"| ceiling converged: doubling its compute gains < {DOUBLING_TARGET} per step | {NOT_MEASURED} |")
    for c in ceilings:
        for split, row in c["splits"].items():
            if "doubling_gain" in row:
                lines.append(f"| {c['env']} ceiling converged on {split}: doubling its compute gains < "
                             f"{DOUBLING_TARGET} per step | {row['doubling_gain']:+.3f} | "
                             f"{status(row['doubling_gain'] < DOUBLING_TARGET)} |")  # fmt: skip
    lines += ceiling_above_learned_targets(ceilings, runs)
    if not probes:
        lines.append(f"| latent probe R² and latent swap | {NOT_MEASURED} |")
    lines += [f"| {t['target']} | {t['measured']} | {t['status']} |" for t in probe_targets(probes)]
    return lines + scaling_targets(scaling)


def ceiling_above_learned_targets(ceilings: list[dict], runs: list[dict]) -> list[str]:
    """DESIGN §9: the ceiling at least every learned method's score on every test task. Per family, the
    smallest margin ``ceiling − method`` over the methods' final meta-tests (each method and budget
    averaged over its seeds) and the test tasks, with the method and task where it is smallest."""
    lines = []
    for c in ceilings:
        scores: dict[tuple[str, str], list[float]] = {}  # (method and budget, task) → per-seed scores
        for r in (r for r in runs if r["env"] == c["env"]):
            name = r["method"] + (" long" if r.get("long") else "")
            for t in r["final"]["tasks"]:
                if t["method"] == r["method"] and t["task"] in c["per_task"]:
                    scores.setdefault((name, t["task"]), []).append(t["reward_per_step"])
        target = f"{c['env']} ceiling ≥ every learned method on every test task (mean over seeds)"
        if not scores:
            lines.append(f"| {target} | {NOT_MEASURED} |")
            continue
        margins = {k: c["per_task"][k[1]]["ceiling"] - statistics.mean(v) for k, v in scores.items()}
        (method, task), worst = min(margins.items(), key=lambda kv: kv[1])
        lines.append(f"| {target} | smallest margin {worst:+.3f} ({method} on {task}) | {status(worst >= 0)} |")
    return lines


def scaling_targets(scaling: dict | None) -> list[str]:
    """The scale issue's two targets: a Dyna iteration's cost at most linear in the training tasks, and
    1024 tasks within the memory bound."""
    linear = "one Dyna iteration's cost grows at most linearly with the training tasks (16 to 1024)"
    memory = f"1024 training tasks fit in {SCALING_MEMORY_GIB} GiB"
    rows = {r["row"]: r for r in scaling["rows"]} if scaling else {}
    if "tasks=16" not in rows or len([r for r in rows if r.startswith("tasks=")]) < 2:
        return [f"| {linear} | {NOT_MEASURED} |"] + ([] if "tasks=1024" in rows else [f"| {memory} | {NOT_MEASURED} |"])
    costs = {r: per_task_cost(rows[r], rows["tasks=16"]) for r in rows if r.startswith("tasks=") and r != "tasks=16"}
    worst = max(costs, key=costs.get)
    measured = f"per-task cost vs 16 tasks at most {costs[worst]:.2f} ({worst})"
    lines = [f"| {linear} | {measured} | {status(costs[worst] <= 1)} |"]
    if "tasks=1024" in rows:
        peak = rows["tasks=1024"]["peak_rss_gib"]
        lines.append(f"| {memory} | {peak:.2f} GiB | {status(peak <= SCALING_MEMORY_GIB)} |")
    else:
        lines.append(f"| {memory} | {NOT_MEASURED} |")
    return lines


def missing_runs(present: set[tuple], expected: list[tuple], command: str) -> list[str]:
    """One line naming the campaign's runs (tuples ending in the seed) without a raw result, or none."""
    absent = [k for k in expected if k not in present]
    if not absent:
        return []
    seeds: dict[tuple, list[int]] = {}
    for *key, seed in absent:
        seeds.setdefault(tuple(key), []).append(seed)
    names = [" ".join("long" if part is True else str(part) for part in key if part is not False)
             + f" seed{'s' if len(s) > 1 else ''} {' '.join(map(str, s))}" for key, s in seeds.items()]  # fmt: skip
    return [f"*Not yet run ({len(absent)} of {len(expected)} runs): {'; '.join(names)}. `{command}` runs exactly "
            "these (it skips a run whose file exists).*", ""]  # fmt: skip


def machine_text(machine: dict | str | None) -> str:
    """A result's machine in words (its load average aside): the old files' string as it is."""
    if machine is None:
        return "not recorded"
    if isinstance(machine, str):
        return machine
    note = f"; {machine['note']}" if machine.get("note") else ""
    return (f"{machine['processor']}, {machine['cpus']} cpus, {machine['platform']}, torch {machine['torch']}, "
            f"{machine['torch_threads']} torch thread(s){note}")  # fmt: skip


def load_text(results: list[dict]) -> str:
    """The load average at the end of the runs (what else ran), for the files that recorded it."""
    loads = [r["machine"]["load_average"] for r in results if isinstance(r.get("machine"), dict)]
    if not loads:
        return ""
    if len(loads) == 1:
        return f"; load average {'/'.join(f'{x:.2f}' for x in loads[0])} (1/5/15 min) at its end"
    return f"; 1-min load average {min(x[0] for x in loads):.2f}–{max(x[0] for x in loads):.2f} at their ends"


def files_text(names: list[str], shown: str) -> str:
    """The files of one provenance group: listed when few, counted by folder when many."""
    if len(names) <= 3:
        return ", ".join(f"`{shown}/{n}`" for n in names)
    folders = sorted({str(Path(n).parent) for n in names})
    return f"{len(names)} files under " + ", ".join(f"`{shown}/{f}/`" for f in folders)


def provenance_lines(files: dict[str, dict], shown: str) -> list[str]:
    """One item per command, commit and machine: which files it wrote, when, and in how much wall time."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, data in files.items():
        command, commit = (data.get(k, "not recorded") for k in ("command", "commit"))
        key = (command, commit, machine_text(data.get("machine")))
        groups.setdefault(key, []).append(name)
    lines = []
    for (command, commit, machine), names in groups.items():
        dates = sorted(files[n]["date"] for n in names if files[n].get("date"))
        when = ("date not recorded" if not dates else dates[0] if dates[0] == dates[-1]
                else f"{dates[0]} to {dates[-1]}")  # fmt: skip
        walls = [files[n]["wall_s"] for n in names if files[n].get("wall_s") is not None]
        wall = f"wall {sum(walls):,.0f} s" + (" in all" if len(walls) > 1 else "") if walls else "wall not recorded"
        load = load_text([files[n] for n in names])
        lines.append(f"- {files_text(names, shown)}: `{command}`; commit {commit}; {when}; {wall}; machine: {machine}"
                     f"{load}.")  # fmt: skip
        for n in names:
            for run in files[n].get("earlier_runs", []):  # rows a later run of the same benchmark kept
                lines.append(f"  `{n}` rows {', '.join(run['rows'])} from `{run['command']}`; commit {run['commit']}; "
                             f"{run['date']}; wall {run['wall_s']:,.0f} s; machine: {machine_text(run['machine'])}.")
            if "rescored" in files[n]:
                r = files[n]["rescored"]
                lines.append(f"  `{n}` rescored against the ceiling by `{r['command']}`; commit {r['commit']}; "
                             f"{r['date']}.")  # fmt: skip
    return lines
