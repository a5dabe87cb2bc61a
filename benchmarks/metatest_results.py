"""Meta-test results of every method — GSSM+APS, GSSM non-amortized, GSSM-MPC, MLSM-v0/v1+APS, M-DPILCO, L2A,
DR-PPO, PE-PPO — over seeds, at equal budgets.

    python benchmarks/metatest_results.py [--envs acrobot cartpole_swingup] [--seeds 0 1 2]
        [--methods gssm_aps gssm_nonamortized gssm_mpc mlsm_v0_aps mlsm_v1_aps m_dpilco l2a dr_ppo pe_ppo]
        [--long-methods dr_ppo pe_ppo] [--no-long] [--jobs 2] [--out runs/metatest_results]
        [--gssm-runs DIR] [--keep] [--quick]

Each run is ``python train.py fit`` of the method's config (``conf/<env>.yaml`` for GSSM+APS,
``conf/baselines/<env>_<method>.yaml`` otherwise: the MLSM rows are the same Dyna loop with the model's
``variant`` changed) with every ``seed`` of the config (run, data, Dyna loop, PPO; never the task
set's ``task_seed``) set to the run's seed, in its own directory. The test-time methods
(``gssm_nonamortized``, ``gssm_mpc``) train nothing: each is ``python train.py test`` of its config on
the GSSM+APS run of the same env and seed — this benchmark's own (run first when both are asked for)
or, with ``--gssm-runs DIR``, the ``last.ckpt`` under ``DIR/<env>/gssm_aps/seed<seed>/`` — and
reports its extra test-time compute (per task, per action).
The model-free methods run at GSSM+APS's real-transition budget and, those in ``--long-methods``,
also at their long budget (``conf/baselines/long_budget.yaml`` on top). Results are always the final checkpoint's
``metatest.json`` (the meta-test after the last iteration); learning curves come from each run's
``metatest_history.jsonl``. ``--jobs`` runs several in parallel with one torch thread each (wall
times are then those of a shared machine). Everything lands in ``<out>/metatest_results.json``;
with ``--keep`` the runs already there whose (env, method, budget) is not rerun are kept, so one method
can be rerun (e.g. after a change to GSSM+APS, or a baseline at the equal budget only) without
rerunning the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from train import compose_config, merge_config  # noqa: E402

DYNA_METHODS = ("gssm_aps", "mlsm_v0_aps", "mlsm_v1_aps")  # the Dyna loop with GSSM or an MLSM ablation
TEST_TIME = ("gssm_nonamortized", "gssm_mpc")  # train.py test on a GSSM+APS checkpoint
MODEL_FREE = ("dr_ppo", "pe_ppo")
METHODS = ("gssm_aps", *TEST_TIME, *DYNA_METHODS[1:], "m_dpilco", "l2a", *MODEL_FREE)
SPLITS = ("interpolation", "extrapolation", "all")
LONG = ROOT / "conf/baselines/long_budget.yaml"
# the tiny profile of the test suite: seconds per run
QUICK_DYNA = ROOT / "tests/configs/tiny_dyna.yaml"
QUICK_BASELINE = {"budget": {"real_transitions": 800}, "envs_per_iteration": 2, "hidden_dim": 16, "latent_dim": 3,
                  "metatest": {"episodes": 2, "context": 5, "every_transitions": 400}}  # fmt: skip
QUICK_LONG = {"budget": {"real_transitions": 1600}, "metatest": {"every_transitions": 400}}
QUICK_COLLECTION = {"budget": {"real_transitions": 120, "num_train_tasks": 3},
                    "collection": {"random_steps_per_task": 40, "tasks_per_iteration": 3}, "hidden_dim": 16,
                    "metatest": {"episodes": 2, "context": 5}}  # fmt: skip
QUICK_L2A = {**QUICK_COLLECTION, "steps_per_iteration": 5, "meta_batch": 4, "mpc": {"horizon": 3, "samples": 4}}
QUICK_M_DPILCO = {**QUICK_COLLECTION, "members": 2, "model_steps": 5, "policy_steps": 3, "policy_rollouts": 8,
                  "horizon": 4, "infer_steps": 3}  # fmt: skip
QUICK_TEST_TIME = {"metatest": {"episodes": 2, "context": 5}, "mpc": {"horizon": 3, "samples": 4},
                   "search_iterations": 2, "search_rollouts": 4}  # fmt: skip
QUICK_TASKS = {"metatest": {"tasks": ["interp-default", "extrap-mixed"]}}

def run_config(env: str, method: str, long: bool, seed: int, run_dir: Path, quick: bool) -> dict:
    """The config one run uses, as a dict."""
    path = ROOT / (f"conf/{env}.yaml" if method == "gssm_aps" else f"conf/baselines/{env}_{method}.yaml")
    dyna = method in DYNA_METHODS
    conf = compose_config(path, *([LONG] if long else []), *([QUICK_DYNA] if quick and dyna else []))
    if quick and not dyna:
        quick_args = (QUICK_TEST_TIME if method in TEST_TIME else QUICK_L2A if method == "l2a"
                      else QUICK_M_DPILCO if method == "m_dpilco"
                      else merge_config(QUICK_BASELINE, QUICK_LONG if long else {}))  # fmt: skip
        conf = merge_config(conf, {"model": {"init_args": merge_config(quick_args, QUICK_TASKS)}})
    conf["seed_everything"] = seed  # every seed of the run (train.py links them), not the task set
    conf["trainer"]["enable_progress_bar"] = False
    conf["trainer"]["logger"]["init_args"].update(save_dir=str(run_dir), version="final")  # run_dir/<env>/final
    return conf


def gssm_checkpoint(runs: Path, env: str, seed: int) -> str:
    """The ``last.ckpt`` of the GSSM+APS run of ``env`` and ``seed`` under ``runs``."""
    found = sorted((runs / env / "gssm_aps" / f"seed{seed}").glob("**/checkpoints/last.ckpt"),
                   key=lambda p: p.stat().st_mtime)  # the newest, if the folder holds several runs
    if not found:
        raise FileNotFoundError(f"no GSSM+APS checkpoint for {env} seed {seed} under {runs / env / 'gssm_aps'}; "
                                "run gssm_aps first or point --gssm-runs at a results folder that has it")  # fmt: skip
    return str(found[-1])


def execute(spec: dict, threads: int) -> dict:
    """Run one ``train.py fit`` (``test`` for a test-time method); its final meta-test, learning curve
    and wall time (a test-time method's learning curve is its one evaluation)."""
    run_dir = Path(spec["dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "config_in.yaml"
    config.write_text(yaml.safe_dump(spec["config"], sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if spec["quick"]:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    command = "test" if spec["method"] in TEST_TIME else "fit"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), command, "--config", str(config)],
                          cwd=run_dir, capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{proc.stderr[-4000:]}")
    log_dir = run_dir / spec["config"]["env"] / "final"
    final = json.loads((log_dir / "metatest.json").read_text())
    history = [json.loads(line) for line in (log_dir / "metatest_history.jsonl").read_text().splitlines()]
    keys = ("env", "method", "long", "seed")
    result = {**{k: spec[k] for k in keys}, "wall": wall, "final": final, "history": history}
    if spec["method"] in DYNA_METHODS:
        result["exploitation_gap"] = exploitation_gap(log_dir)
    if (log_dir / "test_compute.json").exists():  # the methods that plan or search at test time
        result["test_compute"] = json.loads((log_dir / "test_compute.json").read_text())
    return result


def exploitation_gap(log_dir: Path) -> dict[str, list[float]]:
    """Per Dyna iteration of a GSSM+APS run: real transitions, the imagined per-step reward of the
    last PPO iteration and the real per-step reward of the collection that followed (training tasks)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    series = {name: [e.value for e in events.Scalars(tag)] for name, tag in (
        ("real_transitions", "real/transitions"), ("imagined", "policy/imagined_reward_per_step"),
        ("real", "real/reward_per_step"))}  # fmt: skip
    return series


def collect(envs: list[str], methods: list[str], seeds: list[int], long: bool, jobs: int, out: Path,
            quick: bool = False, long_methods: tuple[str, ...] = ("dr_ppo", "pe_ppo"),
            keep: bool = False, gssm_runs: Path | None = None) -> dict:  # fmt: skip
    """Run every (env, method, budget, seed) and gather the results (see the module docstring)."""
    specs = []
    for env in envs:
        for method in methods:
            for is_long in (False, True) if (long and method in long_methods and method in MODEL_FREE) else (False,):
                for seed in seeds:
                    name = f"{env}/{method}{'_long' if is_long else ''}/seed{seed}"
                    run_dir = out / name
                    specs.append({"name": name, "dir": str(run_dir), "env": env, "method": method, "long": is_long,
                                  "seed": seed, "quick": quick,
                                  "config": run_config(env, method, is_long, seed, run_dir, quick)})  # fmt: skip
    threads = 1 if jobs > 1 else (os.cpu_count() or 1)
    trained = [s for s in specs if s["method"] not in TEST_TIME]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(lambda s: execute(s, threads), trained))
        for spec in specs:  # after the GSSM+APS runs they read
            if spec["method"] in TEST_TIME:
                checkpoint = gssm_checkpoint(gssm_runs or out, spec["env"], spec["seed"])
                spec["config"]["model"]["init_args"]["checkpoint"] = checkpoint
        runs += list(pool.map(lambda s: execute(s, threads), [s for s in specs if s["method"] in TEST_TIME]))
    previous = out / "metatest_results.json"
    if keep and previous.exists():
        rerun = {(s["env"], s["method"], s["long"]) for s in specs}
        runs = [r for r in json.loads(previous.read_text())["runs"]
                if (r["env"], r["method"], r["long"]) not in rerun] + runs
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "jobs": jobs,
        "command": " ".join(["python", "benchmarks/metatest_results.py", *sys.argv[1:]]),
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metatest_results.json").write_text(json.dumps(result, indent=1))
    return result


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


def markdown(result: dict) -> str:
    """The results table (per env × method × budget, mean ± std across seeds) and the sample ratios."""
    runs = result["runs"]
    envs = list(dict.fromkeys(r["env"] for r in runs))
    order = lambda r: (envs.index(r["env"]), METHODS.index(r["method"]), r["long"], r["seed"])  # noqa: E731
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(runs, key=order):
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
        wall = statistics.mean(g["wall"] for g in group)
        wall_cell = "—" if math.isnan(wall) else f"{wall:.0f} s"  # NaN: a run rebuilt from its folder
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == method)
        lines.append(f"| {env} | {method} | {'long' if long else 'equal'} | {transitions:,.0f} | {len(group)} | "
                     f"{' | '.join(cells)} | {wall_cell} | {test_time_compute(group)} | {episodes} |")  # fmt: skip
    for env in dict.fromkeys(r["env"] for r in runs):
        group = [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        group = group or [r for r in runs if r["env"] == env]
        cells = [mean_std([final_metric(g, "random", s) for g in group]) for s in SPLITS]
        episodes = next(t["episodes"] for t in group[0]["final"]["tasks"] if t["method"] == "random")
        lines.append(f"| {env} | random | — | 0 | {len(group)} | {' | '.join(cells)} | — | — | {episodes} |")
    lines += ["", *against_gssm_aps(runs)]
    lines += ["", "Real transitions a model-free method needs to reach GSSM+APS's final mean per-step reward (all test",
              "tasks, mean over seeds), from its long-budget learning curve, as a multiple of GSSM+APS's budget",
              "(interpolated between evaluations; a curve already above it at its first evaluation counts that",
              "evaluation's transitions, an upper bound):", "",
              "| env | GSSM+APS reward | GSSM+APS transitions | method | transitions to reach (per seed) | ratio |",
              "|---|---:|---:|---|---|---:|"]  # fmt: skip
    for env in dict.fromkeys(r["env"] for r in runs):
        ours = [r for r in runs if r["env"] == env and r["method"] == "gssm_aps"]
        if not ours:
            continue
        level = statistics.mean(final_metric(r, "gssm_aps", "all") for r in ours)
        budget = statistics.mean(r["history"][-1]["real_transitions"] for r in ours)
        for method in ("dr_ppo", "pe_ppo"):
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
    lines += ["", "No collapse (issue target: on every seed the final meta-test is within 0.03 of that seed's best",
              "evaluation, and the std of the final across seeds is ≤ 0.03; mean per-step reward, all test tasks):", "",
              "| env | method | final per seed | best per seed | largest drop | std across seeds | target |",
              "|---|---|---|---|---:|---:|---|"]  # fmt: skip
    for (env, method, _), group in groups.items():
        if method != "gssm_aps":
            continue
        finals = [final_metric(g, method, "all") for g in group]
        bests = [max(h["summary"][method]["all"] for h in g["history"]) for g in group]
        drop = max(b - f for b, f in zip(bests, finals, strict=True))
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        met = "met" if drop <= 0.03 and sd <= 0.03 else "missed"
        lines.append(f"| {env} | {method} | {', '.join(f'{f:.3f}' for f in finals)} | "
                     f"{', '.join(f'{b:.3f}' for b in bests)} | {drop:.3f} | {sd:.3f} | {met} |")  # fmt: skip
    return "\n".join(lines)


def curves(result: dict, env: str, points: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method (long budget for the model-free ones): a common transition grid and the mean and
    std across seeds of the meta-test per-step reward (all test tasks) interpolated onto it."""
    out = {}
    for method in (m for m in METHODS if m not in TEST_TIME):  # the test-time methods have one point
        group = [r for r in result["runs"] if r["env"] == env and r["method"] == method]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["acrobot", "cartpole_swingup"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-long", action="store_true", help="skip the model-free long-budget runs")
    parser.add_argument("--long-methods", nargs="+", default=list(MODEL_FREE), choices=MODEL_FREE,
                        help="the model-free methods that also run at the long budget")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="runs/metatest_results")
    parser.add_argument("--quick", action="store_true", help="tiny settings (the test suite's smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the saved runs of the methods not rerun")
    parser.add_argument("--gssm-runs", type=Path, default=None,
                        help="where the test-time methods find GSSM+APS checkpoints (default: --out)")
    args = parser.parse_args()
    result = collect(args.envs, args.methods, args.seeds, not args.no_long, args.jobs, Path(args.out), args.quick,
                     tuple(args.long_methods), args.keep, args.gssm_runs)
    print(f"# meta-test results; {result['machine']}, {result['date']}")
    print(markdown(result))


if __name__ == "__main__":
    main()
