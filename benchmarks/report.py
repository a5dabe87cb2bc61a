"""``docs/RESULTS.md`` and its figures, regenerated from the committed raw results alone: nothing is rerun.

    python benchmarks/report.py [--results docs/results] [--docs docs]

Reads every JSON under ``--results`` (each benchmark writes its own through :mod:`raw_results`:
``throughput.json``, ``model_comparison/<env>/<variant>_seed<k>.json``, ``ceiling_<env>.json``,
``gap_ladder_<env>_<label>.json``, ``metatest/<env>/<method>[_long]_seed<k>.json`` (the MuJoCo families'
in their own section, as returns),
``latent_probe_<label>.json``, ``dyna_loop/<config>.json``, ``scaling.json``) and writes ``RESULTS.md`` and the figures
its data allow (``learning_curves.png``, ``exploitation_gap.png``, ``latents.png``, ``gap_ladder.png``)
into ``--docs``, removing a figure whose data are gone. A section whose files are absent says so in
one line, with the command that writes them; running a benchmark is always that separate command.
The same files give the same bytes: fixed order and float formats, and no date but the newest file's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import metatest_tables  # noqa: E402
import mujoco_tables  # noqa: E402
import report_figures  # noqa: E402
import report_tables  # noqa: E402
from report_sections import DOUBLING_TARGET, missing_runs, provenance_lines, targets_lines  # noqa: E402

FIGURES = ("learning_curves.png", "exploitation_gap.png", "latents.png", "gap_ladder.png")
MODEL_VARIANTS = ("gssm", "mlsm_v0", "mlsm_v1")  # modules.models.meta_dynamics_net.VARIANTS (a test keeps them equal)
COMMANDS = {
    "throughput": "python benchmarks/throughput.py --context-sets 4 64",
    "model": "python benchmarks/model_comparison.py",
    "ceiling": "python benchmarks/ceiling.py",
    "ladder": "python benchmarks/gap_ladder.py <main-job checkpoint> --label <label>",
    "metatest": "python benchmarks/metatest_results.py",
    "mujoco": "python benchmarks/metatest_results.py --envs half_cheetah slim_humanoid",
    "probe": "python benchmarks/latent_probe.py --ckpt <checkpoints> --out docs/results/latent_probe_<label>.json",
    "dyna": "python benchmarks/dyna_loop.py",
    "scaling": "python benchmarks/scaling.py",
}  # fmt: skip


def load(results: Path) -> dict[str, dict]:
    """Every raw result under ``results``, keyed by its path relative to it, in path order."""
    return {p.relative_to(results).as_posix(): json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))}


def kinds(files: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """The files by benchmark: the key of :data:`COMMANDS` their name says, ``other`` for the rest."""
    patterns = {"throughput": r"throughput\.json", "model": r"model_comparison/.+", "ceiling": r"ceiling_[^/]+",
                "ladder": r"gap_ladder_[^/]+", "metatest": r"metatest/.+", "probe": r"latent_probe_[^/]+",
                "dyna": r"dyna_loop/.+", "scaling": r"scaling\.json"}  # fmt: skip
    out: dict[str, dict[str, dict]] = {k: {} for k in [*patterns, "other"]}
    for name, data in files.items():
        kind = next((k for k, p in patterns.items() if re.fullmatch(p, name)), "other")
        out[kind][name] = data
    return out


def missing(shown: str, kind: str, note: str = "") -> list[str]:
    """The one line of a section without raw results: what is missing and the command that writes it."""
    return [f"*Not in the repository: {shown}; written by `{COMMANDS[kind]}`{note}.*"]


def label_of(name: str, prefix: str) -> str:
    """``gap_ladder_acrobot_seed0.json`` → ``seed0`` (``prefix``: the part before the label)."""
    return Path(name).stem.removeprefix(prefix)


def probe_rows(probes: dict[str, dict]) -> list[dict]:
    """The probe rows of every file, each labelled by its file when the file's rows share one label."""
    rows = []
    for name, probe in probes.items():
        same = len({r["label"] for r in probe["rows"]}) == 1
        rows += [{**r, "label": label_of(name, "latent_probe_") if same else r["label"]} for r in probe["rows"]]
    return rows


def ladders_of(by: dict) -> tuple[list[dict], list[str]]:
    """The gap ladders and their labels (``gap_ladder_<env>_<label>.json``)."""
    return list(by["ladder"].values()), [label_of(n, f"gap_ladder_{d['env']}_") for n, d in by["ladder"].items()]


def runs_of(by: dict) -> list[dict]:
    """The classic families' Table 2 runs (per-step rewards, ceilings, figures)."""
    return metatest_tables.sort_runs(r for r in by["metatest"].values() if r["env"] not in mujoco_tables.MUJOCO_ENVS)


def mujoco_runs_of(by: dict) -> list[dict]:
    """The MuJoCo families' Table 2 runs (returns per episode)."""
    return metatest_tables.sort_runs(r for r in by["metatest"].values() if r["env"] in mujoco_tables.MUJOCO_ENVS)


def figures(by: dict, docs: Path) -> list[str]:
    """Draw the figures the files allow into ``docs``; their names."""
    runs, (ladders, labels), drawn = runs_of(by), ladders_of(by), []
    if runs:
        report_figures.learning_curves(runs, docs / "learning_curves.png")
        drawn.append("learning_curves.png")
        for name, draw in (("exploitation_gap.png", report_figures.exploitation_figure),
                           ("latents.png", report_figures.latent_figure)):  # fmt: skip
            if draw(runs, docs / name):
                drawn.append(name)
    if ladders:
        report_figures.gap_ladder_figure(ladders, labels, docs / "gap_ladder.png")
        drawn.append("gap_ladder.png")
    return drawn


def targets(by: dict) -> list[str]:
    tp = by["throughput"].get("throughput.json")
    return [*targets_lines(tp, runs_of(by), list(by["ceiling"].values()), probe_rows(by["probe"]),
                           list(by["dyna"].values()), by["scaling"].get("scaling.json")),
            *mujoco_tables.target_lines(mujoco_runs_of(by))]  # fmt: skip


def throughput(by: dict) -> list[str]:
    tp = by["throughput"].get("throughput.json")
    return report_tables.throughput_lines(tp) if tp else missing("`throughput.json`", "throughput")


def model_quality(by: dict) -> list[str]:
    models = list(by["model"].values())
    if not models:
        return missing("`model_comparison/<env>/<variant>_seed<k>.json`", "model")
    grid = [(e, v, s) for e in metatest_tables.ENVS for v in MODEL_VARIANTS for s in metatest_tables.SEEDS]
    return ["Identical random-policy data per env and seed, mean ± std across seeds; NLL in nats per transition and",
            "MSE on normalised Δs (one-step, test tasks); H-step RMSE of the open-loop state prediction in units of",
            "each observation dimension's std.", "",
            *missing_runs({(r["env"], r["variant"], r["seed"]) for r in models}, grid, COMMANDS["model"]),
            *report_tables.model_lines(models)]  # fmt: skip


def ceiling(by: dict) -> list[str]:
    if not by["ceiling"]:
        return missing("`ceiling_<env>.json`", "ceiling")
    return ["Per test task: MPPI over the family's own equations with the task's true physics (ceiling), with the",
            "physics of the training range's centre (floor), and a uniform-random policy; mean per-step reward.",
            "Where a family has a guide policy (cart-pole), the ceiling is per task the better of MPPI and a policy",
            "trained by PPO on the tasks' exact equations, the floor the better of MPPI and a policy trained on the",
            f"centre physics. DESIGN §9 asks the doubling gain (twice the candidates and PPO iterations) to stay under "
            f"{DOUBLING_TARGET}.", "",
            *report_tables.ceiling_lines(list(by["ceiling"].values()))]  # fmt: skip


def gap_ladder(by: dict) -> list[str]:
    ladders, labels = ladders_of(by)
    if not ladders:
        return missing("`gap_ladder_<env>_<label>.json`", "ladder")
    return ["Per split of the test tasks (DESIGN §9): each rung's per-step reward with its normalised score",
            "`(x − random) / (ceiling − random)` in brackets; the adaptation gain of the meta-test is",
            "`(c − floor) / (ceiling − floor)`.", "", *report_tables.ladder_lines(ladders, labels), "",
            "![gap ladder](gap_ladder.png)"]  # fmt: skip


def metatest(by: dict) -> list[str]:
    runs = runs_of(by)
    if not runs:
        return missing("any per-run result of Table 2 (`metatest/<env>/<method>[_long]_seed<k>.json`; the "
                       "numbers of earlier reports were not kept as raw results)", "metatest",
                       ", which skips a run whose file exists, so the campaign can span sessions")  # fmt: skip
    jobs, threads = ({str(r.get(k, "not recorded")) for r in runs} for k in ("jobs", "threads"))
    present = {(r["env"], r["method"], r["long"], r["seed"]) for r in runs}
    return ["Mean per-step reward on the test tasks (DESIGN §6: online context, then evaluation episodes per task,",
            "fewer for MPC as the table says, no gradient step of the policy), the final checkpoint of each run,",
            "mean ± std across seeds; every method on every test task. `equal` is GSSM+APS's real-transition",
            f"budget, `long` the model-free methods' long budget. Runs: {', '.join(sorted(jobs))} at a time, "
            f"{', '.join(sorted(threads))} torch thread(s) each.", "",
            *missing_runs(present, metatest_tables.campaign(), COMMANDS["metatest"]),
            metatest_tables.markdown(runs), "", "![learning curves](learning_curves.png)", "",
            "Model exploitation: the imagined per-step reward of the last PPO iteration of each Dyna iteration",
            "against the real per-step reward the policy then collected on the training tasks (mean ± std across",
            "GSSM+APS seeds).", "", "![imagined vs real reward](exploitation_gap.png)", "",
            "GSSM's task latents on the test tasks against their physics parameters:", "",
            "![latents vs physics parameters](latents.png)"]  # fmt: skip


def mujoco(by: dict) -> list[str]:
    runs = mujoco_runs_of(by)
    if not runs:
        return missing("any MuJoCo run (`metatest/{half_cheetah,slim_humanoid}/<method>_seed<k>.json`)", "mujoco")
    present = {(r["env"], r["method"], r["long"], r["seed"]) for r in runs}
    jobs, threads = ({str(r.get(k, "not recorded")) for r in runs} for k in ("jobs", "threads"))
    return ["Return per 1000-step episode on the test tasks (the paper's unit; DESIGN §5), the final checkpoint of",
            "each run: the mean over the split's test tasks and the seeds, ± the std across test tasks / ± the std",
            "across seeds. Trained on the 5 × 5 mass × damping grid; interpolation is the paper's 4 × 4 grid,",
            "extrapolation CaDM's out-of-range sets. The paper's column is its Table 2 (interpolation tasks).",
            f"Runs: {', '.join(sorted(jobs))} at a time, {', '.join(sorted(threads))} torch thread(s) each.", "",
            *missing_runs(present, mujoco_tables.campaign(), COMMANDS["mujoco"]),
            *mujoco_tables.returns_table(runs), "", *metatest_tables.against_gssm_aps(runs)]  # fmt: skip


def latent_probe(by: dict) -> list[str]:
    probes = probe_rows(by["probe"])
    return [report_tables.probe_markdown(probes)] if probes else missing("`latent_probe_<label>.json`", "probe")


def main_job(by: dict) -> list[str]:
    runs = list(by["dyna"].values())
    return report_tables.dyna_loop_lines(runs) if runs else missing("`dyna_loop/<config>.json`", "dyna")


def scale(by: dict) -> list[str]:
    result = by["scaling"].get("scaling.json")
    if result is None:
        return missing("`scaling.json`", "scaling")
    return ["One Dyna iteration of the acrobot main job in a fresh process per row (`benchmarks/scaling.py`):",
            "`tasks=T` trains on T tasks with the same 3,200 real transitions per iteration; `context=C` sets the",
            "context size of model training, imagination and collection at 16 tasks. Phases from TensorBoard,",
            "peak resident memory of the process.", "", *report_tables.scaling_lines(result["rows"])]  # fmt: skip


SECTIONS = (("Targets", targets), ("Throughput", throughput),
            ("Model quality: GSSM vs MLSM-v0 vs MLSM-v1", model_quality),
            ("Exact-model ceiling and no-adaptation floor", ceiling), ("Gap ladder of GSSM+APS", gap_ladder),
            ("Meta-test results", metatest), ("MuJoCo rows of Table 2: returns per episode", mujoco),
            ("Does the task latent carry the task?", latent_probe),
            ("Main job end to end", main_job), ("Scale: training tasks and context size", scale))  # fmt: skip


def render(files: dict[str, dict], results_shown: str, docs: Path) -> tuple[str, list[str]]:
    """RESULTS.md's text and the figures drawn into ``docs`` (see the module docstring)."""
    by = kinds(files)
    dates = sorted(d["date"] for d in files.values() if isinstance(d.get("date"), str))
    newest = f" (the newest dated {dates[-1][:10]})" if dates else ""
    lines = ["# mbmrl — measured results", "",
             f"Generated by `python benchmarks/report.py` from the {len(files)} raw results under "
             f"`{results_shown}/`{newest}.",
             "The report measures nothing and nothing is copied by hand: every number below is in one of those files,",
             "each listed under Provenance with the command, commit and machine that produced it.", ""]  # fmt: skip
    for heading, section in SECTIONS:
        lines += [f"## {heading}", "", *section(by), ""]
    lines += ["## Provenance", "", *provenance_lines(files, results_shown), ""]
    return "\n".join(lines), figures(by, docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs/results", help="the raw results to render")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where RESULTS.md and the figures go")
    args = parser.parse_args()
    results = args.results.resolve()
    shown = str(results.relative_to(ROOT)) if results.is_relative_to(ROOT) else str(results)
    args.docs.mkdir(parents=True, exist_ok=True)
    text, drawn = render(load(results), shown, args.docs)
    for stale in set(FIGURES) - set(drawn):  # a figure of data no longer in the results would mislead
        (args.docs / stale).unlink(missing_ok=True)
    (args.docs / "RESULTS.md").write_text(text)
    print(f"wrote {args.docs / 'RESULTS.md'} and {', '.join(drawn) or 'no figure'}")


if __name__ == "__main__":
    main()
