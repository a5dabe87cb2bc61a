"""How one Dyna iteration's wall time and peak memory grow with the training tasks and the context size.

    python benchmarks/scaling.py                      # every row; merges into docs/results/scaling.json
    python benchmarks/scaling.py --rows tasks=16 tasks=64 context=200 [--out FILE] [--extra ARGS...]

Each row is one ``python train.py fit --config conf/acrobot.yaml --trainer.max_epochs 1`` in a fresh
process (one Dyna iteration: the model's epoch, APS in the model, collection), with

- ``tasks=T`` (16, 64, 256, 1024): ``T`` training tasks, each with the shipped 200 random and 400
  validation steps, and **the same real transitions per iteration** (3,200: one episode in 16 tasks,
  round robin, ``collect_tasks_per_iteration 16``);
- ``context=C`` (50, 200, 1000) at 16 tasks: the data's ``context_max`` (the contexts of model training,
  imagination and collection) ``C``, with ``max(200, C)`` random steps per task so that a context fits.

The meta-test is cut to one task and two episodes (its cost depends on the test tasks, not on these).
Printed per row: the process's wall, the data set-up (the random and validation steps, before the
first epoch), the phases (``time/{model,policy,collect}_seconds`` from TensorBoard) and the peak
resident memory of the process (``ru_maxrss``). Rows run one after another, never side by side.
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

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("tasks=16", "tasks=64", "tasks=256", "tasks=1024", "context=50", "context=200", "context=1000")
MEMORY_BOUND_GIB = 8
PHASES = ("model", "policy", "collect")


def row_args(row: str) -> list[str]:
    """The train.py arguments of one row (``tasks=T`` or ``context=C``)."""
    kind, value = row.split("=")
    n = int(value)
    if kind == "tasks":
        return ["--data.init_args.num_train_tasks", str(n), "--dyna.init_args.collect_tasks_per_iteration", "16"]
    if kind == "context":
        return ["--data.init_args.context_max", str(n), "--data.init_args.random_steps_per_task", str(max(200, n))]
    raise ValueError(f"row {row!r}: expected tasks=<n> or context=<n>")


def run_row(row: str, extra: list[str]) -> dict:
    """One iteration in a fresh process: its wall, set-up, phases (seconds) and peak memory (GiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "conf/acrobot.yaml"),
               "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
               "--dyna.init_args.metatest.tasks", "[interp-default]", "--dyna.init_args.metatest.episodes", "2",
               *row_args(row), *extra]  # fmt: skip
        log = Path(tmp) / "stderr.txt"
        start = time.perf_counter()
        with log.open("w") as stderr:
            proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (its peak memory)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{row} failed:\n{log.read_text()[-4000:]}")
        events = EventAccumulator(str(next(Path(tmp).glob("runs/acrobot/version_*"))))
        events.Reload()
        phases = {p: events.Scalars(f"time/{p}_seconds")[-1].value for p in (*PHASES, "eval")}
    peak_gib = usage.ru_maxrss / 2**20  # KiB on Linux
    setup = wall - sum(phases.values())
    return {"row": row, "wall_s": wall, "setup_s": setup, "phases_s": phases,
            "iteration_s": sum(phases[p] for p in PHASES), "peak_rss_gib": peak_gib}  # fmt: skip


def print_table(rows: list[dict]) -> None:
    print("| row | process wall | data set-up | model | policy | collect | iteration (model+policy+collect) "
          "| per-task cost vs 16 tasks (≤ 1: at most linear) | peak memory |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = next((r for r in rows if r["row"] == "tasks=16"), None)
    for r in rows:
        ph, ratio = r["phases_s"], ""
        if base is not None and r["row"].startswith("tasks="):
            n = int(r["row"].split("=")[1])
            ratio = f"{r['iteration_s'] / base['iteration_s'] / (n / 16):.2f}"
        print(f"| {r['row']} | {r['wall_s']:.0f} s | {r['setup_s']:.0f} s | {ph['model']:.0f} s | {ph['policy']:.0f} s"
              f" | {ph['collect']:.0f} s | {r['iteration_s']:.0f} s | {ratio} | {r['peak_rss_gib']:.2f} GiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/scaling.json")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    args = parser.parse_args()
    previous = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    kept = {r["row"]: r for r in previous if r["row"] not in args.rows}
    for row in args.rows:
        kept[row] = run_row(row, args.extra)
        print(f"{row}: {kept[row]['iteration_s']:.0f} s iteration, {kept[row]['peak_rss_gib']:.2f} GiB", flush=True)
    rows = [kept[r] for r in ROWS if r in kept]
    print_table(rows)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    args.out.write_text(json.dumps({"benchmark": "scaling", "env": "acrobot", "machine": machine,
                                    "command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
