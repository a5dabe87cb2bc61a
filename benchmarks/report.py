"""``docs/RESULTS.md`` and its figures, regenerated from the benchmarks by one command.

    python benchmarks/report.py [--reuse] [--out runs/report] [--docs docs] [--jobs 2] [--only metatest]
    python benchmarks/report.py --quick --out /tmp/report --docs /tmp/report/docs   # the test suite's profile

Runs ``benchmarks/throughput.py``, ``benchmarks/model_comparison.py`` and
``benchmarks/metatest_results.py`` (their JSON lands in ``--out``; ``--reuse`` loads a benchmark's
JSON instead of rerunning it when it is there), then writes ``RESULTS.md``, ``learning_curves.png``
(meta-test reward vs real transitions, one line per method, shaded ±1 std across seeds),
``exploitation_gap.png`` (GSSM+APS's imagined vs real per-step reward of the training tasks per Dyna
iteration) and ``latents.png`` (GSSM's latent means vs the physics parameters of the test tasks) into
``--docs``. ``<out>/latent_probe.json`` (``benchmarks/latent_probe.py --out``), when present, adds the
latent probe's table. ``--only metatest`` reruns the meta-test benchmark alone and carries the
throughput and model-quality sections over from the current ``RESULTS.md``, marked as not rerun.
Targets missed stay in the tables as measured, with their cause where it is known.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import metatest_results  # noqa: E402
import model_comparison  # noqa: E402
import throughput  # noqa: E402

import envs  # noqa: E402

IMAGINATION_TARGET = 200_000
METATEST_TARGETS = {"acrobot": (-0.62, -0.62), "cartpole_swingup": (0.70, 0.58)}
LABELS = {"gssm_aps": "GSSM+APS", "gssm_nonamortized": "GSSM, non-amortized", "gssm_mpc": "GSSM-MPC",
          "mlsm_v0_aps": "MLSM-v0+APS", "mlsm_v1_aps": "MLSM-v1+APS", "m_dpilco": "M-DPILCO", "l2a": "L2A",
          "dr_ppo": "DR-PPO", "pe_ppo": "PE-PPO", "random": "random"}  # fmt: skip
MODEL_INTRO = (
    "Identical random-policy data per env and seed, mean ± std across seeds; NLL in nats per transition and",
    "MSE on normalised Δs (one-step, test tasks); H-step RMSE of the open-loop state prediction in units of",
    "each observation dimension's std.",
)
# what is known about a target that the measurement misses (printed only when it is missed)
KNOWN_CAUSES = {
    "imagination": "the benchmark machine is a shared 2-core VM whose speed varies by ±30% between runs; "
    "the matmul-bound share is in the table (the rest is per-op overhead of small kernels)",
    "acrobot": "the meta-test per-step reward plateaus near −0.63 on every seed with either Dyna schedule (all 16 or 8 "
    "tasks per iteration); the meta-test protocol on the training tasks gives the same (−0.63, seed 0), so it is no "
    "adaptation gap, and DR-PPO's long run levels off at −0.62 too. It is not the task's ceiling: L2A (a plain MLP "
    "adapted online, MPPI with the exact reward) reached −0.593 interpolation at the same 48,000 transitions, 3 seeds, "
    "while GSSM-MPC (the same planner in GSSM) stays at −0.63, and M-DPILCO (an ensemble MLP with task embeddings, a "
    "policy trained pathwise on 20-step imagined rollouts) reached −0.619 / −0.613; so GSSM's predictions on the "
    "swings are the first suspect, then PPO's 50-step horizon; APS's own pathwise option (DESIGN §3) was not tried",
    "cartpole_swingup": "the finer Dyna schedule raised the meta-test protocol on the training tasks to 0.76–0.84 "
    "(0.61–0.81 before) and interpolation to 0.62–0.70, but the short light poles stay low on every seed "
    "(interpolation 0.43–0.47, extrapolation 0.33–0.36, against 0.86 on the default task): an adaptation gap — the "
    "cart-pole model uses its latent little (the swap ratios and the pole mass's R² below), so a test task's context "
    "tells the policy little; the seeds spread widely, and one seed rerun with two torch threads instead of one moved "
    "interpolation by 0.08, so differences under 0.05 between single runs are noise"
}


def profile(quick: bool) -> dict:
    """What each benchmark runs: the full report or the test suite's tiny one."""
    if quick:
        return {"devices": ["cpu"], "context_sets": [8], "repeats": 2, "model_envs": ["acrobot"], "model_seeds": [0],
                "model_epochs": 1, "envs": ["acrobot"], "seeds": [0, 1],
                "long_methods": ("dr_ppo", "pe_ppo")}  # fmt: skip
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return {"devices": devices, "context_sets": [4, 64], "repeats": 10, "model_envs": ["acrobot", "cartpole_swingup"],
            "model_seeds": [0, 1, 2], "model_epochs": 30, "envs": ["acrobot", "cartpole_swingup"],
            "seeds": [0, 1, 2], "long_methods": ("dr_ppo",)}  # fmt: skip


def cached(path: Path, reuse: bool, compute):
    """``compute()``'s JSON at ``path``, or what is already there with ``reuse``."""
    if reuse and path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return value


def learning_curves(results: dict, path: Path) -> None:
    """One panel per env: meta-test mean per-step reward (all test tasks) vs real transitions."""
    env_names = list(dict.fromkeys(r["env"] for r in results["runs"]))
    fig, axes = plt.subplots(1, len(env_names), figsize=(6 * len(env_names), 4), squeeze=False)
    for ax, env in zip(axes[0], env_names, strict=True):
        for method, (grid, mean, std) in metatest_results.curves(results, env).items():
            (line,) = ax.plot(grid, mean, label=LABELS[method], marker="." if len(grid) == 1 else None)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25)
        random = [metatest_results.final_metric(r, "random", "all") for r in results["runs"] if r["env"] == env]
        ax.axhline(statistics.mean(random), color="grey", linestyle=":", label="random")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set_title(env)
        ax.set_xlabel("real training transitions")
        ax.set_ylabel("meta-test mean per-step reward")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def exploitation_figure(results: dict, path: Path) -> None:
    """One panel per env: imagined vs real per-step reward of the training tasks per Dyna iteration,
    mean ± std across GSSM+APS seeds (the gap is what the policy gains by exploiting model error)."""
    runs = [r for r in results["runs"] if r["method"] == "gssm_aps" and "exploitation_gap" in r]
    env_names = list(dict.fromkeys(r["env"] for r in runs))
    if not env_names:
        return
    fig, axes = plt.subplots(1, len(env_names), figsize=(6 * len(env_names), 4), squeeze=False)
    for ax, env in zip(axes[0], env_names, strict=True):
        group = [r["exploitation_gap"] for r in runs if r["env"] == env]
        n = min(len(g["real"]) for g in group)
        x = np.array(group[0]["real_transitions"][:n])
        for key, label in (("imagined", "imagined (last PPO iteration)"), ("real", "real (next collection)")):
            values = np.array([g[key][:n] for g in group])
            (line,) = ax.plot(x, values.mean(0), label=label)
            ax.fill_between(x, values.mean(0) - values.std(0), values.mean(0) + values.std(0),
                            color=line.get_color(), alpha=0.25)  # fmt: skip
        ax.set_title(f"{env}: model exploitation gap")
        ax.set_xlabel("real training transitions")
        ax.set_ylabel("per-step reward, training tasks")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def carried_section(heading: str, following: str, docs: Path, intro: tuple[str, ...] = ()) -> list[str]:
    """The body of ``## heading`` of the current RESULTS.md (up to ``## following``), for sections a
    partial report does not rerun; marked as such. The section's fixed ``intro`` lines, which the
    report writes itself, are left out (carrying them over doubled them at every partial report)."""
    text = (docs / "RESULTS.md").read_text() if (docs / "RESULTS.md").exists() else ""
    start, end = text.find(f"## {heading}\n"), text.find(f"## {following}\n")
    if start < 0 or end < 0:
        return ["Not rerun for this report (`--only metatest`) and no earlier version found."]
    note = "*Carried over from the previous report, not rerun with this one (`--only metatest`).*"
    body = [line for line in text[start + len(heading) + 4 : end].strip().splitlines()
            if line != note and line not in intro]  # fmt: skip
    body = [line for i, line in enumerate(body) if line or (i > 0 and body[i - 1])]  # no double blank lines
    return [note, "", *"\n".join(body).strip().splitlines()]


def latent_figure(results: dict, path: Path) -> None:
    """GSSM's latent means on the test tasks (first principal component per seed, its sign fixed so it
    rises with the first parameter) against each physics parameter, coloured by split."""
    runs = [r for r in results["runs"] if r["method"] == "gssm_aps"]
    env_names = list(dict.fromkeys(r["env"] for r in runs))
    params = {env: list(envs.make_family(env).test_tasks()[0].parameters) for env in env_names}
    width = max((len(p) for p in params.values()), default=1)
    fig, axes = plt.subplots(len(env_names), width, figsize=(4 * width, 3.2 * len(env_names)), squeeze=False)
    for row, env in enumerate(env_names):
        for k, run in enumerate(r for r in runs if r["env"] == env):
            tasks = [t for t in run["final"]["tasks"] if t["method"] == "gssm_aps"]
            z = np.array([t["latent"] for t in tasks])
            z = z - z.mean(0)
            pc = z @ np.linalg.svd(z, full_matrices=False)[2][0]
            first = np.array([t["params"][params[env][0]] for t in tasks])
            if np.corrcoef(first, pc)[0, 1] < 0:
                pc = -pc
            for col, name in enumerate(params[env]):
                x = np.array([t["params"][name] for t in tasks])
                for split, colour in (("interpolation", "tab:blue"), ("extrapolation", "tab:red")):
                    keep = np.array([t["split"] == split for t in tasks])
                    axes[row, col].scatter(x[keep], pc[keep], color=colour, marker="os^v"[k % 4],
                                           label=f"{split}, seed {run['seed']}")  # fmt: skip
                axes[row, col].set_xlabel(name)
                axes[row, col].set_ylabel(f"{env}: latent PC1")
        axes[row, 0].legend(fontsize=7)
        for col in range(len(params[env]), width):
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def target_lines(tp: dict | None, results: dict, probe: dict | None) -> list[str]:
    lines = ["| target | measured | status |", "|---|---|---|"]
    if tp is not None:
        cpu = next(r for r in tp["imagination"] if r["device"] == "cpu")
        met = cpu["transitions_per_s"] >= IMAGINATION_TARGET
        status = "met" if met else f"missed: {KNOWN_CAUSES['imagination']}"
        lines.append(f"| imagined transitions/s ≥ {IMAGINATION_TARGET:,} (CPU, default acrobot sizes) | "
                     f"{cpu['transitions_per_s']:,.0f} | {status} |")  # fmt: skip
    for env, (lo_i, lo_e) in METATEST_TARGETS.items():
        runs = [r for r in results["runs"] if r["env"] == env and r["method"] == "gssm_aps"]
        if not runs:
            continue
        interp = statistics.mean(metatest_results.final_metric(r, "gssm_aps", "interpolation") for r in runs)
        extrap = statistics.mean(metatest_results.final_metric(r, "gssm_aps", "extrapolation") for r in runs)
        met = interp >= lo_i and extrap >= lo_e
        status = "met" if met else f"missed: {KNOWN_CAUSES.get(env, 'cause not known')}"
        lines.append(f"| {env} GSSM+APS per-step reward interp ≥ {lo_i}, extrap ≥ {lo_e} | "
                     f"{interp:.3f} / {extrap:.3f} | {status} |")  # fmt: skip
    for row in (probe or {}).get("targets", []):
        lines.append(f"| {row['target']} | {row['measured']} | {row['status']} |")
    return lines


def render(tp: dict | None, models: list[dict] | None, results: dict, commands: list[str], docs: Path,
           probe: dict | None = None) -> str:  # fmt: skip
    docs.mkdir(parents=True, exist_ok=True)
    throughput_lines = [throughput.markdown(tp)] if tp is not None else carried_section(
        "Throughput", "Model quality: GSSM vs MLSM-v0 vs MLSM-v1", docs)  # fmt: skip
    model_lines = [model_comparison.markdown(models)] if models is not None else carried_section(
        "Model quality: GSSM vs MLSM-v0 vs MLSM-v1", "Meta-test results", docs, MODEL_INTRO)  # fmt: skip
    learning_curves(results, docs / "learning_curves.png")
    exploitation_figure(results, docs / "exploitation_gap.png")
    latent_figure(results, docs / "latents.png")
    date = tp["date"] if tp is not None else results["date"]
    machine = tp["machine"] if tp is not None else results["machine"]
    lines = [
        "# mbmrl — measured results",
        "",
        f"Generated by `python benchmarks/report.py` on {date}; machine: {machine}.",
        "Every number below was measured by the commands listed at the end; nothing is copied by hand (the",
        "causes given for missed targets are known explanations, written once in `benchmarks/report.py`).",
        "",
        "## Targets",
        "",
        *target_lines(tp, results, probe),
        "",
        "## Throughput",
        "",
        *throughput_lines,
        "",
        "## Model quality: GSSM vs MLSM-v0 vs MLSM-v1",
        "",
        *MODEL_INTRO,
        "",
        *model_lines,
        "",
        "## Meta-test results",
        "",
        "Mean per-step reward on the test tasks (DESIGN §6: online context, then evaluation episodes per task —",
        "50, fewer for MPC, as the table says — no gradient step of the policy), the final checkpoint of each run,",
        "mean ± std across seeds; every method on every test task. `equal` is GSSM+APS's",
        f"real-transition budget, `long` the model-free methods' long budget. Runs: {results['jobs']} at a time,",
        f"one torch thread each, so wall times are those of a shared machine. Measured on {results['machine']},",
        f"{results['date']}, by: {results['command']}.",
        "",
        metatest_results.markdown(results),
        "",
        "![learning curves](learning_curves.png)",
        "",
        "Model exploitation: the imagined per-step reward of the last PPO iteration of each Dyna iteration",
        "against the real per-step reward the policy then collected on the training tasks (mean ± std across",
        "GSSM+APS seeds).",
        "",
        "![imagined vs real reward](exploitation_gap.png)",
        "",
        *(["## Does the task latent carry the task?", "", probe["markdown"], ""] if probe else []),
        "![latents vs physics parameters](latents.png)",
        "",
        "## Commands",
        "",
        *[f"- `{c}`" for c in commands],
        "",
    ]
    text = "\n".join(lines)
    (docs / "RESULTS.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/report")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="load a benchmark's JSON from --out when it exists")
    parser.add_argument("--quick", action="store_true", help="tiny settings (the test suite's smoke run)")
    parser.add_argument("--only", choices=["metatest"], help="rerun only this benchmark (see the module docstring)")
    args = parser.parse_args()
    p, out = profile(args.quick), Path(args.out)
    model_comparison.setup_quiet()

    def measure_throughput() -> dict:
        result = throughput.measure(p["devices"], p["context_sets"], p["repeats"], args.quick)
        machine = f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {platform.platform()}"
        return {**result, "machine": machine, "date": time.strftime("%Y-%m-%d")}

    only = args.only is not None
    tp = None if only else cached(out / "throughput.json", args.reuse, measure_throughput)
    models = None if only else cached(out / "model_comparison.json", args.reuse, lambda: model_comparison.compare(
        p["model_envs"], list(model_comparison.VARIANTS), p["model_seeds"], p["model_epochs"], args.quick))
    results = cached(out / "metatest/metatest_results.json", args.reuse, lambda: metatest_results.collect(
        p["envs"], list(metatest_results.METHODS), p["seeds"], True, args.jobs, out / "metatest", args.quick,
        p["long_methods"]))
    probe_path = out / "latent_probe.json"
    probe = json.loads(probe_path.read_text()) if probe_path.exists() else None
    quick = " --quick" if args.quick else ""
    reuse = " --reuse" if args.reuse else ""
    commands = [
        f"python benchmarks/report.py{quick}{reuse} --out {out} (this file and its figures; each benchmark below "
        f"saves its JSON in {out}, which --reuse reads instead of rerunning it)",
        f"python benchmarks/throughput.py --devices {' '.join(p['devices'])} --context-sets "
        f"{' '.join(map(str, p['context_sets']))}{quick}",
        f"python benchmarks/model_comparison.py --envs {' '.join(p['model_envs'])} --seeds "
        f"{' '.join(map(str, p['model_seeds']))} --epochs {p['model_epochs']}",
        f"python benchmarks/metatest_results.py --envs {' '.join(p['envs'])} --seeds {' '.join(map(str, p['seeds']))} "
        f"--long-methods {' '.join(p['long_methods'])} --jobs {args.jobs} --out {out / 'metatest'}{quick}",
    ]
    if only:
        commands = [c for c in commands if "throughput.py" not in c and "model_comparison.py" not in c]
    if probe is not None:
        commands.append(probe["command"])
    render(tp, models, results, commands, Path(args.docs), probe)
    print(f"wrote {Path(args.docs) / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
