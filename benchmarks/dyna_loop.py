"""The main job end to end: wall time, phases, real transitions and meta-test results per env.

    python benchmarks/dyna_loop.py [--envs acrobot cartpole_swingup] [--extra --trainer.max_epochs 5]

Runs ``python train.py fit --config conf/<env>.yaml`` in a temporary directory, then prints the
wall time and its phase breakdown (sums of ``time/model``, ``time/policy``, ``time/collect``,
``time/eval``), the real training transitions used, and the final meta-test (the last
checkpoint's policy, never the best one) mean per-step reward of GSSM+APS and of the random
policy on interpolation and extrapolation tasks, against the targets of the issue tracker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
# targets on a 2-core CPU with at most 100k real transitions and 15 minutes
TARGETS = {"acrobot": (-0.70, -0.70), "cartpole_swingup": (0.70, 0.50)}


def run(env: str, extra: list[str], workdir: Path) -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / f"conf/{env}.yaml"),
           "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{env} run failed:\n{proc.stderr[-4000:]}")
    log_dir = max((workdir / "runs" / env).glob("version_*"), key=lambda p: p.stat().st_mtime)
    events = EventAccumulator(str(log_dir))
    events.Reload()
    total = {p: sum(e.value for e in events.Scalars(f"time/{p}")) for p in ("model", "policy", "collect", "eval")}
    report = json.loads((log_dir / "metatest.json").read_text())
    transitions = events.Scalars("real/transitions")[-1].value
    return {"wall": wall, "phases": total, "transitions": transitions, "summary": report["summary"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["acrobot", "cartpole_swingup"])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    args = parser.parse_args()
    print(f"# Dyna loop, default configs; {platform.machine()}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}")
    print("| env | wall | model | policy | collect | eval | real transitions | method | interp | extrap | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for env in args.envs:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(env, args.extra, Path(tmp))
        ph = r["phases"]
        lo_i, lo_e = TARGETS[env]
        for method in ("gssm_aps", "random"):
            s = r["summary"][method]
            met = s["interpolation"] >= lo_i and s["extrapolation"] >= lo_e
            target = f"≥ {lo_i} / ≥ {lo_e}: {'met' if met else 'missed'}" if method == "gssm_aps" else ""
            print(
                f"| {env} | {r['wall']:.0f} s | {ph['model']:.0f} s | {ph['policy']:.0f} s | {ph['collect']:.0f} s | "
                f"{ph['eval']:.0f} s | {r['transitions']:,.0f} | {method} | {s['interpolation']:.3f} | "
                f"{s['extrapolation']:.3f} | {target} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
