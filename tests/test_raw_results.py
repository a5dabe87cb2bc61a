"""The raw results' writer (benchmarks/raw_results.py): every file carries its provenance, and a commit is
dirty only when the code differs from it (the results and the report regenerated from them do not count)."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys

from cli_runner import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from raw_results import PROVENANCE, git_commit, write_result


def test_a_result_carries_commit_command_date_wall_and_machine(tmp_path):
    written = write_result(tmp_path / "a/b.json", {"env": "acrobot", "per_task": {"t": 0.5}}, 12.345, note="beside 2")
    result = json.loads((tmp_path / "a/b.json").read_text())
    assert result == written and result["env"] == "acrobot" and result["per_task"] == {"t": 0.5}
    assert set(PROVENANCE) <= set(result)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(rf"{head}(\+dirty)?", result["commit"])
    assert result["command"].startswith("python ")
    assert datetime.datetime.fromisoformat(result["date"]).tzinfo is not None
    assert result["wall_s"] == 12.3
    machine = result["machine"]
    assert machine["cpus"] >= 1 and machine["torch_threads"] >= 1 and len(machine["load_average"]) == 3
    assert machine["torch"] and machine["platform"] and machine["note"] == "beside 2"


def git(repo, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)  # fmt: skip


def test_the_commit_is_dirty_only_when_tracked_code_changed(tmp_path, tmp_path_factory):
    (tmp_path / "docs/results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "docs/results/r.json").write_text("{}\n")
    (tmp_path / "docs/RESULTS.md").write_text("# results\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "docs/results/r.json").write_text('{"new": 1}\n')  # a rerun rewrote a committed result
    (tmp_path / "docs/RESULTS.md").write_text("# regenerated\n")
    (tmp_path / "docs/results/s.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}+dirty"
    assert git_commit(tmp_path_factory.mktemp("plain")) == "not recorded (no git)"
