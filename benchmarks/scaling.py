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
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from raw_results import COMMIT_AT_START, add_note_argument, run_child, write_result  # noqa: E402
from report_tables import scaling_lines  # noqa: E402

ROWS = ("tasks=16", "tasks=64", "tasks=256", "tasks=1024", "context=50", "context=200", "context=1000")
PHASES = ("model", "policy", "collect")
PROVENANCE = ("command", "commit", "date", "wall_s", "machine")


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
        child = run_child(cmd, Path(tmp))
        if child.returncode != 0:
            raise RuntimeError(f"{row} failed:\n{child.stderr_tail}")
        events = EventAccumulator(str(next(Path(tmp).glob("runs/acrobot/version_*"))))
        events.Reload()
        phases = {p: events.Scalars(f"time/{p}_seconds")[-1].value for p in (*PHASES, "eval")}
    wall, peak_gib = child.wall_s, child.peak_rss_gib
    setup = wall - sum(phases.values())
    # a row kept from an earlier run keeps its own commit and load (what ran beside it)
    return {"row": row, "wall_s": wall, "setup_s": setup, "phases_s": phases,
            "iteration_s": sum(phases[p] for p in PHASES), "peak_rss_gib": peak_gib, "commit": COMMIT_AT_START,
            "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/scaling.json")
    add_note_argument(parser)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    args = parser.parse_args()
    start = time.perf_counter()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    kept = {r["row"]: r for r in previous["rows"] if r["row"] not in args.rows}
    for row in args.rows:
        kept[row] = run_row(row, args.extra)
        print(f"{row}: {kept[row]['iteration_s']:.0f} s iteration, {kept[row]['peak_rss_gib']:.2f} GiB", flush=True)
    rows = [kept[r] for r in ROWS if r in kept]
    print("\n".join(scaling_lines(rows)))
    write_result(args.out, {"benchmark": "scaling", "env": "acrobot", "rows": rows,
                            "earlier_runs": earlier_runs(previous, set(kept) - set(args.rows))},
                 wall_s=time.perf_counter() - start, note=args.note)  # fmt: skip


def earlier_runs(previous: dict, kept_rows: set[str]) -> list[dict]:
    """The provenance of the earlier invocations whose rows this file keeps (command, commit, date, wall, machine)."""
    runs = [*previous.get("earlier_runs", []), {k: previous[k] for k in PROVENANCE if k in previous}]
    if "command" in previous:
        runs[-1]["rows"] = [r["row"] for r in previous["rows"] if r["row"] in kept_rows]
    return [r for r in runs if set(r.get("rows", ())) & kept_rows]


if __name__ == "__main__":
    main()
