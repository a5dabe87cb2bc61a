"""The raw results of the benchmarks: one small JSON per run under ``docs/results/``, with its provenance.

    write_result(RESULTS / "throughput.json", {"imagination": rows}, wall_s=93.2, note="2 other runs beside it")

Every benchmark that produces a reported number writes it through :func:`write_result`, which adds
``commit`` (``git rev-parse HEAD`` when the process started, ``+dirty`` when tracked files other than
the results and the report differed from it), ``command`` (the command line), ``machine`` (platform, CPUs, torch and
its threads, the load average: what else was running), ``date`` (UTC) and ``wall_s``. ``benchmarks/report.py`` renders
``docs/RESULTS.md`` from these files alone (DESIGN §7.7).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/results"
PROVENANCE = ("commit", "command", "date", "wall_s", "machine")


# outputs, not code: the raw results and the report regenerated from them
OUTPUTS = (":!docs/results", ":!docs/RESULTS.md", ":!docs/*.png")


def git_commit(root: Path = ROOT) -> str:
    """HEAD's hash, ``+dirty`` if a tracked file other than the :data:`OUTPUTS` has changed;
    "not recorded (no git)" outside a checkout."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        return "not recorded (no git)"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS],
                            cwd=root, capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def command_line() -> str:
    """``python <script> <args>``, the script relative to the repository when it is inside it."""
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    return shlex.join(["python", shown, *sys.argv[1:]])


def machine(note: str | None = None) -> dict:
    """Where the run ran; ``note`` says what the numbers alone do not (e.g. other processes beside it)."""
    info = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    return {**info, "note": note} if note else info


# the code this process loaded: taken at import, before a long run's tree may change under it
COMMIT_AT_START = git_commit()


def provenance(wall_s: float | None, note: str | None = None) -> dict:
    """The provenance fields of one run (see the module docstring); date and load at its end."""
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    wall = None if wall_s is None else round(wall_s, 1)
    return {"commit": COMMIT_AT_START, "command": command_line(), "date": date, "wall_s": wall,
            "machine": machine(note)}  # fmt: skip


def write_result(path: Path, payload: dict, wall_s: float | None, note: str | None = None) -> dict:
    """Write ``payload`` with its provenance to ``path`` (folders made); returns what was written."""
    result = {**payload, **provenance(wall_s, note)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def add_note_argument(parser: argparse.ArgumentParser) -> None:
    """``--note TEXT``: a sentence for the result's ``machine`` (what else shared it, why it ran)."""
    parser.add_argument("--note", help="said in the result's machine field, e.g. 'beside 2 other runs'")


@dataclass
class ChildRun:
    """What :func:`run_child` measured of one command: wall seconds, peak resident memory (GiB; the
    child's own ``ru_maxrss``, whatever ran before it in this process), exit code and the end of its stderr."""

    wall_s: float
    peak_rss_gib: float
    returncode: int
    stderr_tail: str


def run_child(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``cmd`` in ``cwd`` (stdout discarded, stderr kept) and measure it; raises nothing on failure."""
    with tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not an earlier one's
        wall = time.perf_counter() - start
        stderr.seek(0)
        tail = stderr.read()[-4000:]
    return ChildRun(wall, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status), tail)  # KiB on Linux
