"""The main job end to end: wall time, phases, real transitions and meta-test results per env.

    python benchmarks/dyna_loop.py [--configs conf/acrobot.yaml conf/cartpole_swingup.yaml] [--note TEXT]
        [--results docs/results/dyna_loop] [--extra ARGS...]
    python benchmarks/dyna_loop.py --configs conf/half_cheetah.yaml conf/slim_humanoid.yaml

Runs ``python train.py fit --config <config>`` in a temporary directory, then prints the
wall time and its phase breakdown (sums of ``time/{model,policy,collect,eval}_seconds``), the
peak resident memory of the run, the real training transitions used, and the final meta-test (the
last checkpoint's policy, never the best one) of GSSM+APS and of the random policy on
interpolation and extrapolation tasks: mean per-step reward and mean episode return (the MuJoCo
rows' unit, docs/DESIGN.md §5), against the targets of the issue tracker. Each
config's run writes ``docs/results/dyna_loop/<config>.json`` (:mod:`raw_results`; ``--results`` to
change the folder; ``<config>``: its path under ``conf/``, ``/`` as ``_``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from mujoco_tables import MEMORY_TARGET_GIB as MUJOCO_MEMORY_TARGET_GIB
from mujoco_tables import RETURN_TARGETS, task_returns
from mujoco_tables import WALL_TARGET_S as MUJOCO_WALL_TARGET_S
from raw_results import RESULTS, add_note_argument, run_child, write_result
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
# targets of the sample-efficiency issue: ≤ 50,000 real transitions and ≤ 10 minutes on 2 CPU cores
TARGETS = {"acrobot": (-0.62, -0.62), "cartpole_swingup": (0.70, 0.58)}
WALL_TARGET_S = 600


def run(config: str, extra: list[str], workdir: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / config),
           "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    child = run_child(cmd, workdir)
    if child.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{child.stderr_tail}")
    log_dir = max(workdir.glob("runs/**/version_*"), key=lambda p: p.stat().st_mtime)
    events = EventAccumulator(str(log_dir))
    events.Reload()
    phases = ("model", "policy", "collect", "eval")
    total = {p: sum(e.value for e in events.Scalars(f"time/{p}_seconds")) for p in phases}
    report = json.loads((log_dir / "metatest.json").read_text())
    transitions = events.Scalars("real/transitions")[-1].value
    env = yaml.safe_load((log_dir / "config.yaml").read_text())["env"]
    returns = {m: {s: float(np.mean(list(task_returns({"final": report}, m, s).values())))
                   for s in ("interpolation", "extrapolation")} for m in report["summary"]}  # fmt: skip
    return {"env": env, "wall": child.wall_s, "peak_memory_gib": child.peak_rss_gib, "phases": total,
            "transitions": transitions, "summary": report["summary"], "returns": returns}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["conf/acrobot.yaml", "conf/cartpole_swingup.yaml"])
    parser.add_argument("--results", type=Path, default=RESULTS / "dyna_loop")
    add_note_argument(parser)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}"
    print(f"# Dyna loop, {' '.join(args.configs)}; {machine}")
    print("| config | wall | model | policy | collect | eval | peak memory | real transitions | method "
          "| interp | extrap | interp return | extrap return | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    walls = []
    for config in args.configs:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(config, args.extra, Path(tmp))
        wall = r.pop("wall")
        stem = str(Path(config).with_suffix("")).removeprefix("conf/").replace("/", "_")
        write_result(args.results / f"{stem}.json", {"config": config, "extra": args.extra, **r}, wall, args.note)
        env, ph = r["env"], r["phases"]
        walls.append((config, env, wall, r["peak_memory_gib"]))
        for method in ("gssm_aps", "random"):
            s, ret = r["summary"][method], r["returns"][method]
            target = ""
            if method == "gssm_aps" and env in TARGETS and "smoke" not in config:
                lo_i, lo_e = TARGETS[env]
                met = s["interpolation"] >= lo_i and s["extrapolation"] >= lo_e
                target = f"≥ {lo_i} / ≥ {lo_e}: {'met' if met else 'missed'}"
            if method == "gssm_aps" and env in RETURN_TARGETS and "smoke" not in config:
                lo = RETURN_TARGETS[env]
                target = f"interp return ≥ {lo:.0f}: {'met' if ret['interpolation'] >= lo else 'missed'}"
            print(
                f"| {config} | {wall:.0f} s | {ph['model']:.0f} s | {ph['policy']:.0f} s | "
                f"{ph['collect']:.0f} s | {ph['eval']:.0f} s | {r['peak_memory_gib']:.2f} GiB | "
                f"{r['transitions']:,.0f} | {method} | {s['interpolation']:.3f} | {s['extrapolation']:.3f} | "
                f"{ret['interpolation']:.1f} | {ret['extrapolation']:.1f} | {target} |",
                flush=True,
            )
    for config, env, wall, memory in walls:
        if "smoke" in config:
            continue
        if env in RETURN_TARGETS:
            met = wall <= MUJOCO_WALL_TARGET_S and memory <= MUJOCO_MEMORY_TARGET_GIB
            print(f"\n{config}: wall {wall:.0f} s, peak {memory:.2f} GiB, target ≤ {MUJOCO_WALL_TARGET_S} s and "
                  f"≤ {MUJOCO_MEMORY_TARGET_GIB:g} GiB on 2 CPU cores: {'met' if met else 'missed'}")
        else:
            status = "met" if wall <= WALL_TARGET_S else "missed"
            print(f"\n{config}: wall {wall:.0f} s, target ≤ {WALL_TARGET_S} s on 2 CPU cores: {status}")


if __name__ == "__main__":
    main()
