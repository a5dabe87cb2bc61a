"""Wall time per Dyna iteration of the default acrobot config with 1 and with 2 CPU processes (DDP).

    python benchmarks/ddp_overhead.py [--iterations 3]

Runs ``train.py fit --config conf/acrobot.yaml --trainer.max_epochs N`` once as one process and
once as ``--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu``, and prints the
mean of ``time/{model,policy,collect}_seconds`` per iteration (rank 0's view; the meta-test
is left out by evaluating only after the last iteration) and the total wall time. On a 2-core
CPU no speed-up is expected: both ranks share the same two cores (each with its own torch
threads) and pay for gradient all-reduces and the all-gather of collected data; the point is
that the loop is correct under DDP and what the overhead costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


def run(extra: list[str], iterations: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "conf/acrobot.yaml"),
               "--trainer.max_epochs", str(iterations), "--trainer.enable_progress_bar", "false",
               "--dyna.metatest.every_transitions", "0", *extra]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-4000:])
        events = EventAccumulator(str(next(Path(tmp).glob("runs/acrobot/version_*"))))
        events.Reload()
        per_iter = sum(
            sum(e.value for e in events.Scalars(f"time/{phase}_seconds")) for phase in ("model", "policy", "collect")
        )
        return per_iter / iterations, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    print(f"# Dyna iteration wall time, conf/acrobot.yaml, {args.iterations} iterations; {os.cpu_count()} cpus")
    print("| processes | s per iteration (model + policy + collect) | total wall incl. start-up and meta-test |")
    print("|---:|---:|---:|")
    for label, extra in (("1", []), ("2 (DDP, gloo)", ["--trainer.strategy", "ddp", "--trainer.devices", "2",
                                                         "--trainer.accelerator", "cpu"])):  # fmt: skip
        per_iter, wall = run(extra, args.iterations)
        print(f"| {label} | {per_iter:.1f} | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
