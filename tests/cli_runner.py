"""Run ``train.py`` as a user would, and fail on noise a user should not see."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOISE = (
    "Tip:",
    "FutureWarning",
    "LeafSpec",
    "does not have many workers",
    "It is recommended",
    "is deprecated",
    "Traceback",
)


def run_cli(
    cwd: Path, *args: str, check: bool = True, timeout: int = 600, log: Path | None = None
) -> subprocess.CompletedProcess:
    """``python train.py *args`` in ``cwd``; with ``check`` it must succeed without noise. With
    ``log``, stdout and stderr go to that file, as on a cluster (``stdout`` is then its text).

    ``tests/`` is on the child's ``PYTHONPATH`` so configs can name test-only callbacks. Past
    ``timeout`` seconds the job and every process it started (DDP ranks) are killed.
    """
    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, str(ROOT / "train.py"), *args]
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("w")) if log else subprocess.PIPE
        pipes = {"stdout": out, "stderr": subprocess.STDOUT if log else subprocess.PIPE}
        with subprocess.Popen(command, cwd=cwd, text=True, env=env, start_new_session=True, **pipes) as run:
            try:
                stdout, stderr = run.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)  # every DDP rank: a hung one would hold the pipes open
                raise
    proc = subprocess.CompletedProcess(command, run.returncode, log.read_text() if log else stdout, stderr or "")
    output = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, output
        for noise in NOISE:
            assert noise not in output, f"{noise!r} shown to the user:\n{output}"
    return proc
