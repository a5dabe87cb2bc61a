"""The report's figures, drawn from the raw results alone; byte-stable PNGs (no software or date stamp).

    learning_curves([json.loads(p.read_text()) for p in Path("docs/results/metatest").glob("*/*.json")], Path("lc.png"))
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
import numpy as np
from metatest_tables import curves, final_metric

LABELS = {"gssm_aps": "GSSM+APS", "gssm_nonamortized": "GSSM, non-amortized", "gssm_mpc": "GSSM-MPC",
          "mlsm_v0_aps": "MLSM-v0+APS", "mlsm_v1_aps": "MLSM-v1+APS", "m_dpilco": "M-DPILCO", "l2a": "L2A",
          "dr_ppo": "DR-PPO", "pe_ppo": "PE-PPO", "random": "random"}  # fmt: skip
RUNG_LABELS = {"a_policy_search": "a: policy search, true physics", "b_large_context": "b: large context",
               "c_adaptation": "c: meta-test", "d_wrong_latent": "d: wrong latent"}  # fmt: skip


def save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG whose bytes depend on the data only (matplotlib stamps its version otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def learning_curves(runs: list[dict], path: Path) -> None:
    """One panel per env: meta-test mean per-step reward (all test tasks) vs real transitions."""
    env_names = list(dict.fromkeys(r["env"] for r in runs))
    fig, axes = plt.subplots(1, len(env_names), figsize=(6 * len(env_names), 4), squeeze=False)
    for ax, env in zip(axes[0], env_names, strict=True):
        for method, (grid, mean, std) in curves(runs, env).items():
            (line,) = ax.plot(grid, mean, label=LABELS[method], marker="." if len(grid) == 1 else None)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25)
        random = [final_metric(r, "random", "all") for r in runs if r["env"] == env]
        ax.axhline(statistics.mean(random), color="grey", linestyle=":", label="random")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set_title(env)
        ax.set_xlabel("real training transitions")
        ax.set_ylabel("meta-test mean per-step reward")
        ax.legend()
    save(fig, path)


def exploitation_figure(runs: list[dict], path: Path) -> bool:
    """One panel per env: imagined vs real per-step reward of the training tasks per Dyna iteration,
    mean ± std across GSSM+APS seeds (the gap is what the policy gains by exploiting model error).
    False (nothing drawn) without a GSSM+APS run."""
    runs = [r for r in runs if r["method"] == "gssm_aps" and "exploitation_gap" in r]
    env_names = list(dict.fromkeys(r["env"] for r in runs))
    if not env_names:
        return False
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
    save(fig, path)
    return True


def latent_figure(runs: list[dict], path: Path) -> bool:
    """GSSM's latent means on the test tasks (first principal component per seed, its sign fixed so it
    rises with the first parameter) against each physics parameter, coloured by split. False (nothing
    drawn) without a GSSM+APS run."""
    runs = [r for r in runs if r["method"] == "gssm_aps"]
    env_names = list(dict.fromkeys(r["env"] for r in runs))
    if not env_names:
        return False
    tasks_of = lambda run: [t for t in run["final"]["tasks"] if t["method"] == "gssm_aps"]  # noqa: E731
    params = {env: list(tasks_of(next(r for r in runs if r["env"] == env))[0]["params"]) for env in env_names}
    width = max(len(p) for p in params.values())
    fig, axes = plt.subplots(len(env_names), width, figsize=(4 * width, 3.2 * len(env_names)), squeeze=False)
    for row, env in enumerate(env_names):
        for k, run in enumerate(r for r in runs if r["env"] == env):
            tasks = tasks_of(run)
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
    save(fig, path)
    return True


def gap_ladder_figure(ladders: list[dict], labels: list[str], path: Path) -> None:
    """One panel per ladder: each rung's normalised score ``(x − random) / (ceiling − random)`` per test
    task, so where GSSM+APS loses to the exact-model ceiling (1) reads off per task."""
    fig, axes = plt.subplots(1, len(ladders), figsize=(6 * len(ladders), 4), squeeze=False)
    for ax, ladder, label in zip(axes[0], ladders, labels, strict=True):
        names = list(ladder["per_task"])
        rungs = [r for r in RUNG_LABELS if r in ladder["per_task"][names[0]]]
        width, top = 0.8 / len(rungs), 1.0
        for i, rung in enumerate(rungs):
            scores = [ladder["per_task"][n][rung].get("normalised_score") for n in names]
            scores = np.array([np.nan if s is None else s for s in scores], dtype=float)
            top = max(top, float(np.nanmax(scores, initial=top)))
            ax.bar(np.arange(len(names)) + (i - (len(rungs) - 1) / 2) * width, scores, width, label=RUNG_LABELS[rung])
        ax.axhline(1.0, color="grey", linestyle=":", label="ceiling")
        ax.set_ylim(top=top + 0.35)  # room for the legend above the bars
        ax.set_xticks(np.arange(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{ladder['env']} ({label}): gap ladder")
        ax.set_ylabel("normalised score")
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    save(fig, path)
