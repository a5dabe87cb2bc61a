"""The results report: its quick profile end to end, and the arithmetic behind its tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_runner import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from metatest_tables import curves, transitions_to_reach


def history(points: list[tuple[int, float]], method: str = "dr_ppo") -> list[dict]:
    return [{"real_transitions": x, "summary": {method: {"all": y}}} for x, y in points]


def test_transitions_to_reach_interpolates_between_evaluations():
    h = history([(100, -1.0), (200, -0.8), (300, -0.6)])
    assert transitions_to_reach(h, "dr_ppo", -0.7) == pytest.approx(250.0)
    assert transitions_to_reach(h, "dr_ppo", -1.0) == 100.0
    assert transitions_to_reach(h, "dr_ppo", -0.5) is None


def test_curves_average_seeds_on_a_common_grid():
    run = {"env": "acrobot", "method": "dr_ppo", "long": True}
    runs = [{**run, "history": history([(0, 0.0), (100, 1.0)])}, {**run, "history": history([(0, 0.0), (100, 3.0)])}]
    grid, mean, std = curves(runs, "acrobot", points=3)["dr_ppo"]
    assert grid.tolist() == [0.0, 50.0, 100.0]
    assert mean.tolist() == [0.0, 1.0, 2.0] and std.tolist() == [0.0, 0.5, 1.0]


@pytest.mark.slow
def test_quick_report_writes_tables_and_figures(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/report.py"), "--quick", "--out", str(out),
                           "--docs", str(docs)], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (docs / "RESULTS.md").read_text()
    for section in ("## Targets", "## Throughput", "## Model quality", "## Meta-test results", "## Commands"):
        assert section in text
    for row in ("| acrobot | gssm |", "| acrobot | mlsm_v1 |", "| acrobot | gssm_aps | equal |",
                "| acrobot | gssm_nonamortized | equal |", "| acrobot | gssm_mpc | equal |",
                "| acrobot | mlsm_v0_aps | equal |", "| acrobot | mlsm_v1_aps | equal |", "| acrobot | l2a | equal |",
                "| acrobot | m_dpilco | equal |",
                "| acrobot | dr_ppo | long |", "| acrobot | pe_ppo | equal |", "| acrobot | random |"):  # fmt: skip
        assert row in text, row
    against = text.split("Against GSSM+APS")[1].split("Real transitions")[0]
    assert all(f"| acrobot | {m} |" in against for m in ("gssm_mpc", "mlsm_v0_aps", "m_dpilco", "l2a", "dr_ppo"))
    assert "ms planning per action" in text and "s search per task" in text and "s embedding inference per task" in text
    assert "| acrobot | gssm_aps | " in text.split("No collapse")[1]  # the stability table
    for figure in ("learning_curves.png", "latents.png", "exploitation_gap.png"):
        data = (docs / figure).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    results = json.loads((out / "metatest/metatest_results.json").read_text())
    methods = sorted({(r["method"], r["long"], r["seed"]) for r in results["runs"]})
    # (gssm_aps, 2 test-time, 2 MLSM, M-DPILCO, L2A) × 2 seeds + (dr, pe) × (equal, long) × 2 seeds
    assert len(methods) == 22
    assert all(r["history"] for r in results["runs"])
    gap = next(r for r in results["runs"] if r["method"] == "gssm_aps")["exploitation_gap"]
    assert len(gap["imagined"]) == len(gap["real"]) == len(gap["real_transitions"]) == 2  # one per Dyna iteration

    # a partial report reruns the meta-test only and carries the other sections over, marked
    throughput_table = text.split("## Throughput")[1].split("## Model quality")[0].strip()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/report.py"), "--quick", "--reuse", "--only",
                           "metatest", "--out", str(out), "--docs", str(docs)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    partial = (docs / "RESULTS.md").read_text()
    carried = partial.split("## Throughput")[1].split("## Model quality")[0]
    assert "Carried over from the previous report" in carried
    assert throughput_table.splitlines()[-1] in carried and "throughput.py" not in partial.split("## Commands")[1]
    assert partial.count("Identical random-policy data per env and seed") == 1, "a section's intro must not pile up"
