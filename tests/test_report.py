"""The results report: the committed raw results regenerate the committed RESULTS.md exactly; Table 2's
arithmetic and figures from per-run files; the quick campaign end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_runner import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import report
from metatest_tables import curves, transitions_to_reach

from modules.models.meta_dynamics_net import VARIANTS

PNG = b"\x89PNG\r\n\x1a\n"


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


def test_committed_results_regenerate_the_committed_report(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["report.py", "--docs", str(tmp_path)])
    report.main()
    committed = (ROOT / "docs/RESULTS.md").read_text()
    assert (tmp_path / "RESULTS.md").read_text() == committed, "rerun python benchmarks/report.py and commit it"
    for figure in report.FIGURES:
        linked = f"]({figure})" in committed
        assert (tmp_path / figure).exists() == linked == (ROOT / "docs" / figure).exists(), figure
        if linked:
            assert (tmp_path / figure).read_bytes()[:8] == PNG


def test_the_report_knows_every_model_variant():
    assert report.MODEL_VARIANTS == VARIANTS


def run_file(method: str, seed: int, long: bool = False, reward: float = -0.7) -> dict:
    """A per-run raw result of metatest_results.py, as small as the tables read."""
    splits = ("interpolation", "interpolation", "extrapolation")
    tasks = [{"method": m, "task": f"t{i}", "split": split, "episodes": 50, "latent": [i, seed + 0.5 * i],
              "params": {"mass": 1.0 + i, "length": 2.0 - i}}
             for m in (method, "random") for i, split in enumerate(splits)]  # fmt: skip
    summary = {method: dict.fromkeys(("interpolation", "extrapolation", "all"), reward + 0.01 * seed),
               "random": dict.fromkeys(("interpolation", "extrapolation", "all"), -0.98)}  # fmt: skip
    curve = [{"real_transitions": x, "summary": {method: {"all": reward - 0.1 + 0.1 * k}}} for k, x in enumerate((
        16_000, 48_000, 480_000 if long else 48_000))]  # fmt: skip
    result = {"env": "acrobot", "method": method, "long": long, "seed": seed, "budget": "long" if long else "equal",
              "jobs": 2, "final": {"summary": summary, "tasks": tasks}, "history": curve, "wall_s": 100.0 + seed,
              "commit": "abc", "command": "python benchmarks/metatest_results.py", "date": "2026-12-04T00:00:00+00:00",
              "machine": "test"}  # fmt: skip
    if method == "gssm_aps":
        result["exploitation_gap"] = {"real_transitions": [16_000, 48_000], "imagined": [-0.6, -0.5],
                                      "real": [-0.7, -0.6]}  # fmt: skip
    return result


def test_table_2_renders_from_per_run_files_and_names_the_missing_runs(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    runs = [run_file("gssm_aps", s) for s in (0, 1)] + [run_file("dr_ppo", s, long=True, reward=-0.5) for s in (0, 1)]
    for r in runs:
        path = results / "metatest" / r["env"] / f"{r['method']}{'_long' if r['long'] else ''}_seed{r['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    docs.mkdir()
    text, drawn = report.render(report.load(results), "results", docs)
    assert "| acrobot | gssm_aps | equal | 48,000 | 2 | -0.695 ± 0.007 |" in text
    assert "| acrobot | dr_ppo | long | 480,000 | 2 |" in text and "| acrobot | random | — | 0 | 2 |" in text
    assert "acrobot gssm_aps seed 2;" in text and "acrobot dr_ppo long seed 2;" in text  # the missing runs, named
    assert "cartpole_swingup l2a seeds 0 1 2" in text
    target = "| acrobot GSSM+APS per-step reward interp ≥ -0.50, extrap ≥ -0.50 (2 seeds) | -0.695 / -0.695 | missed"
    assert target in text
    assert "Not in the repository: `throughput.json`" in text  # a section without files says so
    assert sorted(drawn) == ["exploitation_gap.png", "latents.png", "learning_curves.png"]
    assert all((docs / f).read_bytes()[:8] == PNG for f in drawn)
    assert "- 4 files under `results/metatest/acrobot/`: `python benchmarks/metatest_results.py`; commit abc" in text



def mujoco_run(seed: int, returns: tuple[float, float, float], peak_gib: float = 1.5) -> dict:
    """A GSSM+APS MuJoCo run on two interpolation tasks and one extrapolation task, with these returns."""
    splits = ("interpolation", "interpolation", "extrapolation")
    tasks = [{"method": m, "task": f"t{i}", "split": split, "episodes": 5, "return_mean": ret,
              "reward_per_step": ret / 1000}
             for m in ("gssm_aps", "random")
             for i, (split, ret) in enumerate(zip(splits, returns if m == "gssm_aps" else (-300.0,) * 3, strict=True))]
    return {"env": "half_cheetah", "method": "gssm_aps", "long": False, "seed": seed, "real_transitions": 246_000,
            "jobs": 2, "threads": 1, "peak_rss_gib": peak_gib, "wall_s": 4000.0 + 2 * seed,
            "final": {"tasks": tasks, "summary": {}}}  # fmt: skip


def test_mujoco_rows_give_returns_with_spreads_across_tasks_and_seeds_and_their_targets():
    from mujoco_tables import returns_table, target_lines

    runs = [mujoco_run(0, (1000.0, 2000.0, 500.0)), mujoco_run(1, (1200.0, 2200.0, 700.0), peak_gib=9.0)]
    table = "\n".join(returns_table(runs))
    # interpolation: task means 1100 and 2100 (std 707.1 across tasks), seed means 1500 and 1700 (std 141.4)
    row = "| half_cheetah | gssm_aps | 246,000 | 2 | 1600.0 ± 707.1 / ± 141.4 | 600.0 ± 0.0 / ± 141.4 | 1597.4 |"
    assert row in table and "| 4001 s | 9.00 GiB | 5 |" in table  # mean wall, worst peak
    assert "| half_cheetah | random | 0 | 2 | -300.0 ± 0.0 / ± 0.0 |" in table
    rows = "\n".join(target_lines(runs))
    assert "| 1600.0 from 2 seed(s), 246,000 transitions | missed (only 2 of 3 seeds) |" in rows  # 3 seeds asked
    assert "| 4002 s, 9.00 GiB (worst run, 2 runs at once) | missed |" in rows  # over the memory bound
    assert "slim_humanoid GSSM+APS interpolation return ≥ 1650" in rows and "not measured" in rows
    three = [*runs[:1], mujoco_run(1, (1200.0, 2200.0, 700.0)), mujoco_run(2, (1100.0, 2100.0, 600.0))]
    assert "| 1600.0 from 3 seed(s), 246,000 transitions | met |" in "\n".join(target_lines(three))


@pytest.mark.slow
def test_quick_campaign_writes_one_result_per_run_that_the_report_renders(tmp_path):
    out, results, docs = tmp_path / "runs", tmp_path / "results", tmp_path / "docs"
    campaign = [sys.executable, str(ROOT / "benchmarks/metatest_results.py"), "--quick", "--envs", "acrobot",
                "--seeds", "0", "1", "--long-methods", "dr_ppo", "pe_ppo", "--out", str(out),
                "--results", str(results / "metatest")]  # fmt: skip
    proc = subprocess.run(campaign, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.relative_to(results / "metatest").as_posix() for p in results.rglob("*.json"))
    # (gssm_aps, 2 test-time, 2 MLSM, M-DPILCO, L2A) × 2 seeds + (dr, pe) × (equal, long) × 2 seeds
    assert len(files) == 22 and "acrobot/dr_ppo_long_seed1.json" in files
    run = json.loads((results / "metatest/acrobot/gssm_aps_seed0.json").read_text())
    assert run["history"] and run["final"]["tasks"] and run["wall_s"] > 0 and run["commit"] and run["machine"]
    assert len(run["exploitation_gap"]["real"]) == 2  # one per Dyna iteration
    again = subprocess.run(campaign, capture_output=True, text=True, timeout=120)  # every run's file exists
    assert again.returncode == 0 and again.stdout.count("skip ") == 22 and "\nrun " not in again.stdout
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/report.py"), "--results", str(results), "--docs",
                           str(docs)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (docs / "RESULTS.md").read_text()
    for method in ("gssm_aps", "gssm_nonamortized", "gssm_mpc", "mlsm_v0_aps", "mlsm_v1_aps", "m_dpilco", "l2a"):
        assert f"| acrobot | {method} | equal |" in text, method
    assert "| acrobot | dr_ppo | long |" in text and "| acrobot | pe_ppo | long |" in text
    assert "ms planning per action" in text and "s search per task" in text and "s embedding inference per task" in text
    assert "| acrobot | gssm_aps | " in text.split("No collapse")[1]
    for figure in ("learning_curves.png", "latents.png", "exploitation_gap.png"):
        assert (docs / figure).read_bytes()[:8] == PNG


def scaling_row(row: str, iteration_s: float, peak_gib: float = 1.0) -> dict:
    phases = {"model": iteration_s / 2, "policy": iteration_s / 2, "collect": 0.0, "eval": 1.0}
    return {"row": row, "wall_s": iteration_s + 5, "setup_s": 4.0, "phases_s": phases, "iteration_s": iteration_s,
            "peak_rss_gib": peak_gib}  # fmt: skip


def test_scaling_targets_call_superlinear_cost_and_memory_over_the_bound_missed():
    from report_sections import scaling_targets

    linear = {"rows": [scaling_row("tasks=16", 10.0), scaling_row("tasks=1024", 600.0, 3.0)]}
    met = scaling_targets(linear)
    assert "at most 0.94 (tasks=1024) | met" in met[0] and "3.00 GiB | met" in met[1]
    rows = [scaling_row("tasks=16", 10.0), scaling_row("tasks=64", 41.0), scaling_row("tasks=1024", 600.0, 9.0)]
    worse = {"rows": rows}
    missed = scaling_targets(worse)
    assert "at most 1.02 (tasks=64) | missed" in missed[0] and "9.00 GiB | missed" in missed[1]
    assert all("not measured" in line for line in scaling_targets(None))


def test_a_scaling_rerun_of_one_row_keeps_the_provenance_of_the_rows_it_did_not_rerun():
    from scaling import earlier_runs

    first = {"rows": [scaling_row("tasks=16", 10.0), scaling_row("tasks=64", 40.0)], "command": "scaling.py",
             "commit": "abc", "date": "d1", "wall_s": 60.0, "machine": {"cpus": 2}}  # fmt: skip
    kept = earlier_runs(first, {"tasks=16"})  # tasks=64 rerun
    assert kept == [{"command": "scaling.py", "commit": "abc", "date": "d1", "wall_s": 60.0, "machine": {"cpus": 2},
                     "rows": ["tasks=16"]}]  # fmt: skip
    second = {**first, "command": "scaling.py --rows tasks=64", "earlier_runs": kept}
    assert earlier_runs(second, {"tasks=64"})[0]["command"] == "scaling.py --rows tasks=64"  # tasks=16 rerun
    assert len(earlier_runs(second, {"tasks=64"})) == 1
    assert earlier_runs({"rows": []}, set()) == []


def test_a_ceiling_below_a_learned_method_on_one_task_is_a_missed_target():
    from report_sections import ceiling_above_learned_targets

    ceiling = {"env": "toy", "per_task": {"a": {"ceiling": 0.8}, "b": {"ceiling": 0.5}}}

    def run(method, seed_scores, long=False):
        tasks = [{"method": method, "task": t, "reward_per_step": v} for t, v in seed_scores.items()]
        return {"env": "toy", "method": method, "long": long, "final": {"tasks": tasks}}

    below = [run("gssm_aps", {"a": 0.7, "b": 0.45}), run("gssm_aps", {"a": 0.7, "b": 0.57}), run("dr_ppo", {"a": 0.1})]
    (line,) = ceiling_above_learned_targets([ceiling], below)
    assert "smallest margin -0.010 (gssm_aps on b) | missed" in line  # the mean of the seeds, 0.51, is above
    (line,) = ceiling_above_learned_targets([ceiling], [*below[:1], run("dr_ppo", {"a": 0.7}, long=True)])
    assert "smallest margin +0.050 (gssm_aps on b) | met" in line
    assert "not measured" in ceiling_above_learned_targets([ceiling], [])[0]


def test_a_guided_ceiling_lists_each_controller_per_task_and_its_guide_settings():
    from report_tables import ceiling_lines

    row = {"split": "interpolation", "random": 0.1, "floor": 0.5, "ceiling": 0.9, "ceiling_mppi": 0.85,
           "ceiling_policy": 0.9, "floor_mppi": 0.5, "floor_policy": 0.4}  # fmt: skip
    guided = {"env": "toy", "episodes": 2, "seed": 0, "settings": {"samples": 8}, "guide": {"iterations": 3},
              "per_task": {"a": row}, "splits": {"interpolation": row}}  # fmt: skip
    lines = ceiling_lines([guided])
    assert "| toy | a | 0.850 | 0.900 | 0.500 | 0.400 |" in lines
    assert any("MPPI samples 8, guide policy iterations 3" in line for line in lines)
    plain = ceiling_lines([{**guided, "guide": None}])
    assert not any("ceiling: MPPI" in line or "guide policy" in line for line in plain)


@pytest.mark.slow
def test_every_method_runs_on_both_mujoco_families_and_the_report_gives_their_returns(tmp_path):
    """The MuJoCo smoke tier: each of the nine methods, tiny, on half-cheetah and slim humanoid (two test tasks)."""
    out, results, docs = tmp_path / "runs", tmp_path / "results", tmp_path / "docs"
    campaign = [sys.executable, str(ROOT / "benchmarks/metatest_results.py"), "--quick", "--envs", "half_cheetah",
                "slim_humanoid", "--seeds", "0", "--no-long", "--out", str(out), "--results", str(results / "metatest")]
    proc = subprocess.run(campaign, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(results.rglob("*.json"))) == 18  # 9 methods × 2 families
    docs.mkdir()
    text, _ = report.render(report.load(results), "results", docs)
    section = text.split("## MuJoCo rows of Table 2")[1].split("\n## ")[0]
    for env in ("half_cheetah", "slim_humanoid"):
        for method in ("gssm_aps", "gssm_nonamortized", "gssm_mpc", "mlsm_v0_aps", "mlsm_v1_aps", "m_dpilco", "l2a",
                       "dr_ppo", "pe_ppo", "random"):  # fmt: skip
            assert f"| {env} | {method} | " in section, (env, method)
    assert "half_cheetah GSSM+APS interpolation return ≥ 1600 on 3 seeds" in text
