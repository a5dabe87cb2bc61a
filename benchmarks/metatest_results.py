"""The Table 2 campaign: every method — GSSM+APS, GSSM non-amortized, GSSM-MPC, MLSM-v0/v1+APS, M-DPILCO,
L2A, DR-PPO, PE-PPO — on every env and seed at equal budgets, one raw result per run.

    python benchmarks/metatest_results.py [--envs acrobot cartpole_swingup] [--seeds 0 1 2]
        [--methods gssm_aps gssm_nonamortized gssm_mpc mlsm_v0_aps mlsm_v1_aps m_dpilco l2a dr_ppo pe_ppo]
        [--long-methods dr_ppo] [--no-long] [--jobs 2] [--out runs/metatest_results]
        [--results docs/results/metatest] [--gssm-runs DIR] [--quick] [--note TEXT]

Each run is ``python train.py fit`` of the method's config (``conf/<env>.yaml`` for GSSM+APS,
``conf/baselines/<env>_<method>.yaml`` otherwise: the MLSM rows are the same Dyna loop with the model's
``variant`` changed) with every ``seed`` of the config (run, data, Dyna loop, PPO; never the task
set's ``task_seed``) set to the run's seed, in its own directory under ``--out``. The test-time methods
(``gssm_nonamortized``, ``gssm_mpc``) train nothing: each is ``python train.py test`` of its config on
the GSSM+APS run of the same env and seed — the ``last.ckpt`` under ``<out>/<env>/gssm_aps/seed<seed>/``
(run first when both are asked for) or under ``--gssm-runs DIR`` — and reports its extra test-time
compute (per task, per action). The model-free methods run at GSSM+APS's real-transition budget and,
those in ``--long-methods``, also at their long budget (``conf/baselines/long_budget.yaml`` on top).

Each finished run writes ``<results>/<env>/<method>[_long]_seed<k>.json`` (:mod:`raw_results`): the
final checkpoint's meta-test (``metatest.json``: per task, per split), its learning curve
(``metatest_history.jsonl``), the config, wall time, peak resident memory and, for the Dyna methods, the
exploitation gap.
A run whose file exists is skipped, so the campaign (about 10 minutes per main job on 2 cores) can
span sessions; delete a file to rerun that run. ``--jobs`` runs several in parallel with one torch
thread each (wall times are then those of a shared machine). ``--quick`` (the test suite's tiny
profile) writes under ``<out>/results`` unless ``--results`` says otherwise, never into docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from metatest_tables import DYNA_METHODS, ENVS, LONG_METHODS, METHODS, MODEL_FREE, SEEDS, TEST_TIME, run_name  # noqa: E402
from raw_results import RESULTS, add_note_argument, run_child, write_result  # noqa: E402

from envs import make_family  # noqa: E402
from train import compose_config, merge_config  # noqa: E402

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


def quick_tasks(env: str) -> dict:
    """The quick profile's meta-test block: the family's first interpolation and first extrapolation task."""
    tasks = make_family(env).test_tasks()
    return {"metatest": {"tasks": [next(t.name for t in tasks if t.split == s) for s in ("interpolation",
                                                                                         "extrapolation")]}}


def run_config(env: str, method: str, long: bool, seed: int, run_dir: Path, quick: bool) -> dict:
    """The config one run uses, as a dict."""
    path = ROOT / (f"conf/{env}.yaml" if method == "gssm_aps" else f"conf/baselines/{env}_{method}.yaml")
    dyna = method in DYNA_METHODS
    conf = compose_config(path, *([LONG] if long else []), *([QUICK_DYNA] if quick and dyna else []))
    if quick and not dyna:
        quick_args = (QUICK_TEST_TIME if method in TEST_TIME else QUICK_L2A if method == "l2a"
                      else QUICK_M_DPILCO if method == "m_dpilco"
                      else merge_config(QUICK_BASELINE, QUICK_LONG if long else {}))  # fmt: skip
        conf = merge_config(conf, {"model": {"init_args": merge_config(quick_args, quick_tasks(env))}})
    elif quick:  # the Dyna loop's meta-test block is the callback's
        conf = merge_config(conf, {"dyna": {"init_args": quick_tasks(env)}})
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
                                "run gssm_aps there first (delete its result file if it has one) or point "
                                "--gssm-runs at the run folders that have it")  # fmt: skip
    return str(found[-1])


def execute(spec: dict, threads: int, jobs: int, note: str | None) -> dict:
    """Run one ``train.py fit`` (``test`` for a test-time method) and write its raw result: the final
    meta-test, learning curve and wall time (a test-time method's learning curve is its one evaluation)."""
    run_dir = Path(spec["dir"])
    log_dir = run_dir / spec["config"]["env"] / "final"
    shutil.rmtree(log_dir, ignore_errors=True)  # a run stopped midway left a history this one would append to
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "config_in.yaml"
    config.write_text(yaml.safe_dump(spec["config"], sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if spec["quick"]:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    command = "test" if spec["method"] in TEST_TIME else "fit"
    print(f"run {spec['name']}", flush=True)
    child = run_child([sys.executable, str(ROOT / "train.py"), command, "--config", str(config)], run_dir, env)
    wall = child.wall_s
    if child.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{child.stderr_tail}")
    history = [json.loads(line) for line in (log_dir / "metatest_history.jsonl").read_text().splitlines()]
    result = {**{k: spec[k] for k in ("env", "method", "long", "seed")}, "budget": "long" if spec["long"] else "equal",
              "real_transitions": history[-1]["real_transitions"], "quick": spec["quick"], "jobs": jobs,
              "threads": threads, "peak_rss_gib": child.peak_rss_gib,
              "final": json.loads((log_dir / "metatest.json").read_text()), "history": history,
              "config": spec["config"]}  # fmt: skip
    if spec["method"] in DYNA_METHODS:
        result["exploitation_gap"] = exploitation_gap(log_dir)
    if (log_dir / "test_compute.json").exists():  # the methods that plan or search at test time
        result["test_compute"] = json.loads((log_dir / "test_compute.json").read_text())
    print(f"done {spec['name']} ({wall:.0f} s): {spec['result']}", flush=True)
    return write_result(Path(spec["result"]), result, wall, note)


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
            results: Path, quick: bool = False, long_methods: tuple[str, ...] = LONG_METHODS,
            gssm_runs: Path | None = None, note: str | None = None) -> list[dict]:  # fmt: skip
    """Run every (env, method, budget, seed) whose result file is missing; the results written."""
    specs = []
    for env in envs:
        for method in methods:
            for is_long in (False, True) if (long and method in long_methods and method in MODEL_FREE) else (False,):
                for seed in seeds:
                    name = f"{env}/{method}{'_long' if is_long else ''}/seed{seed}"
                    result = results / env / f"{run_name(method, is_long, seed)}.json"
                    if result.exists():
                        print(f"skip {name}: {result} exists", flush=True)
                        continue
                    run_dir = out / name
                    specs.append({"name": name, "dir": str(run_dir), "result": str(result), "env": env,
                                  "method": method, "long": is_long, "seed": seed, "quick": quick,
                                  "config": run_config(env, method, is_long, seed, run_dir, quick)})  # fmt: skip
    threads = 1 if jobs > 1 else (os.cpu_count() or 1)
    trained = [s for s in specs if s["method"] not in TEST_TIME]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(lambda s: execute(s, threads, jobs, note), trained))
        for spec in specs:  # after the GSSM+APS runs they read
            if spec["method"] in TEST_TIME:
                checkpoint = gssm_checkpoint(gssm_runs or out, spec["env"], spec["seed"])
                spec["config"]["model"]["init_args"]["checkpoint"] = checkpoint
        test_time = [s for s in specs if s["method"] in TEST_TIME]
        runs += list(pool.map(lambda s: execute(s, threads, jobs, note), test_time))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--no-long", action="store_true", help="skip the model-free long-budget runs")
    parser.add_argument("--long-methods", nargs="+", default=list(LONG_METHODS), choices=MODEL_FREE,
                        help="the model-free methods that also run at the long budget")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/metatest_results"), help="the runs' folders")
    parser.add_argument("--results", type=Path, default=None,
                        help="the raw results (default docs/results/metatest; <out>/results with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (the test suite's smoke run)")
    parser.add_argument("--gssm-runs", type=Path, default=None,
                        help="where the test-time methods find GSSM+APS checkpoints (default: --out)")
    add_note_argument(parser)
    args = parser.parse_args()
    results = args.results or (args.out / "results" if args.quick else RESULTS / "metatest")
    runs = collect(args.envs, args.methods, args.seeds, not args.no_long, args.jobs, args.out, results, args.quick,
                   tuple(args.long_methods), args.gssm_runs, args.note)  # fmt: skip
    print(f"{len(runs)} runs written under {results}; render them with python benchmarks/report.py")


if __name__ == "__main__":
    main()
