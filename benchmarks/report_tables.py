"""The report's tables of throughput, model quality, ceiling, gap ladder, latent probe, main job and scale,
each from the raw results its benchmark writes (plain dicts: no torch, nothing rerun).

    print("\n".join(ceiling_lines([json.loads(Path("docs/results/ceiling_acrobot.json").read_text())])))
"""

from __future__ import annotations

import statistics

R2_SHARE, SWAP_TARGET = 0.9, 2.0  # issue 26: R² ≥ 0.9 × R²_max; a swap doubles the error
HORIZONS = (10, 50)
SPLIT_PAIR = ("interpolation", "extrapolation")
MODEL_COLUMNS = [f"model/val_{split}/{score}" for score in ("nll", "mse") for split in SPLIT_PAIR]
MODEL_COLUMNS += [f"rollout{h}/{split}" for h in HORIZONS for split in SPLIT_PAIR]
LADDER_RUNGS = ("a_policy_search", "b_large_context", "c_adaptation", "d_wrong_latent")
SCALING_MEMORY_GIB = 8  # issue 28: 1024 training tasks fit in 8 GiB on 2 cores


def throughput_lines(tp: dict) -> list[str]:
    """``benchmarks/throughput.py``'s imagination, env-step, training and latency figures."""
    lines = ["Imagined rollouts (policy + model + reward), acrobot default sizes:", "",
             "| device | tasks × rollouts | context sets/task | horizon | transitions/s | matmul GFLOP/s | "
             "MFLOP/transition | FLOP-bound limit | achieved |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in tp["imagination"]:
        lines.append(
            f"| {r['device']} | {r['tasks']} × {r['rollouts_per_task']} | {r['context_sets']} | {r['horizon']} | "
            f"{r['transitions_per_s']:,.0f} | {r['matmul_gflops']:,.0f} | {r['flop_per_transition'] / 1e6:.3f} | "
            f"{r['limit']:,.0f} | {r['transitions_per_s'] / r['limit']:.0%} |"
        )
    lines += ["", "| family | env steps/s, single env | vector env, 16 tasks |", "|---|---:|---:|"]
    lines += [f"| {r['family']} | {r['single']:,.0f} | {r['vector16']:,.0f} |" for r in tp["env"]]
    lat = tp["action_latency"]
    return [*lines, "",
            f"GSSM training: {tp['model_samples_per_s']:,.0f} target transitions/s (acrobot model config).",
            f"Action latency at batch 1 with context inference ({lat['context']} transitions): "
            f"{lat['seconds'] * 1e3:.2f} ms (CPU)."]  # fmt: skip


def mean_std(values: list[float], digits: int = 2) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def model_lines(runs: list[dict]) -> list[str]:
    """``benchmarks/model_comparison.py``'s runs: one row per env × variant, mean ± std across seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(runs, key=lambda r: (r["env"], r["variant"], r["seed"])):
        groups.setdefault((r["env"], r["variant"]), []).append(r)
    lines = ["| env | variant | params | seeds | epochs | NLL interp | NLL extrap | MSE interp | MSE extrap | "
             + " | ".join(f"H={h} RMSE {s}" for h in HORIZONS for s in ("interp", "extrap")) + " | samples/s |",
             "|---|---|---:|---:|---:|" + "---:|" * (1 + len(MODEL_COLUMNS))]  # fmt: skip
    for (env, variant), group in groups.items():
        scores = [g["scores"] for g in group]
        epochs = ", ".join(sorted({str(g["epochs"]) for g in group}))
        cells = [env, variant, f"{scores[0]['params']:,}", str(len(group)), epochs,
                 *(mean_std([s[c] for s in scores]) for c in MODEL_COLUMNS)]  # fmt: skip
        lines.append(f"| {' | '.join(cells)} | {statistics.mean(s['samples_per_s'] for s in scores):,.0f} |")
    return lines


def ceiling_lines(ceilings: list[dict]) -> list[str]:
    """``benchmarks/ceiling.py``'s per-task and per-split random, floor, ceiling and doubled ceiling."""
    lines = ["| env | task | split | random | floor (centre physics) | ceiling (true physics) | ceiling, 2× compute "
             "| doubling gain |", "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in ceilings:
        rows = [(name, row["split"], row) for name, row in c["per_task"].items()]
        rows += [("mean", split, row) for split, row in c["splits"].items()]
        for name, split, row in rows:
            doubled = [f"{row[k]:.3f}" if k in row else "—" for k in ("ceiling_doubled", "doubling_gain")]
            lines.append(f"| {c['env']} | {name} | {split} | {row['random']:.3f} | {row['floor']:.3f} | "
                         f"{row['ceiling']:.3f} | {' | '.join(doubled)} |")  # fmt: skip
    settings = "; ".join(f"{c['env']}: {c['episodes']} episodes per task, seed {c['seed']}, MPPI "
                         + ", ".join(f"{k} {v}" for k, v in c["settings"].items())
                         + ("" if not c.get("guide") else ", guide policy "
                            + ", ".join(f"{k} {v}" for k, v in c["guide"].items())) for c in ceilings)  # fmt: skip
    lines += ["", f"Settings: {settings}."]
    guided = [c for c in ceilings if c.get("guide")]
    if guided:
        lines += ["", "| env | task | ceiling: MPPI | ceiling: policy | floor: MPPI | floor: policy |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {c['env']} | {name} | " + " | ".join(f"{row[k]:.3f}" for k in
                  ("ceiling_mppi", "ceiling_policy", "floor_mppi", "floor_policy")) + " |"
                  for c in guided for name, row in c["per_task"].items()]  # fmt: skip
    return lines


def ladder_cell(row: dict, rung: str) -> str:
    """A rung's per-step reward with its normalised score in brackets, "—" if not measured."""
    reward = row.get(f"{rung}/reward_per_step")
    if reward is None:
        return "—"
    score = row.get(f"{rung}/normalised_score")
    return f"{reward:.3f}" + ("" if score is None else f" ({score:.2f})")


def ladder_lines(ladders: list[dict], labels: list[str]) -> list[str]:
    """``benchmarks/gap_ladder.py``'s rungs per split: per-step reward (normalised score)."""
    lines = ["| env | checkpoint | split | a: policy search, true physics | b: large context | c: meta-test "
             "| d: wrong latent | imagined − real | adaptation gain c |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for ladder, label in zip(ladders, labels, strict=True):
        for split, row in ladder["splits"].items():
            gain = row.get("c_adaptation/adaptation_gain")
            cells = [ladder_cell(row, rung) for rung in LADDER_RUNGS]
            cells += [f"{row['imagined_minus_real']:+.3f}", "—" if gain is None else f"{gain:.2f}"]
            lines.append(f"| {ladder['env']} | {label} | {split} | {' | '.join(cells)} |")
    sizes = "; ".join(f"{lab}: {ladder['env']}, {ladder['real_transitions']:,} real transitions, "
                      f"{ladder['exact_iterations']} PPO iterations for rung a, " + ", ".join(
                          f"{k.replace('_', ' ')} {v}" for k, v in ladder["settings"].items() if v is not None)
                      for ladder, lab in zip(ladders, labels, strict=True))  # fmt: skip
    return [*lines, "", f"Settings: {sizes}."]


def probe_markdown(rows: list[dict]) -> str:
    """``benchmarks/latent_probe.py``'s R² table and latent-swap table."""
    lines = ["| checkpoint | env | parameter | R² (held-out half) | R² inside | R² outside | R²_max (set encoder) |",
             "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        for name, r2 in row["r2"].items():
            lines.append(f"| {row['label']} | {row['env']} | {name} | {r2['all']:.3f} | {r2['inside']:.3f} | "
                         f"{r2['outside']:.3f} | {row['r2_max'][name]:.3f} |")  # fmt: skip
    lines += ["", "| checkpoint | env | one-step error, own latent | another task's latent | another task's context "
              "| swapped latent / own | swapped context / own |", "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        s = row["one_step"]
        lines.append(f"| {row['label']} | {row['env']} | {s['own']:.4f} | {s['swapped_latent']:.4f} | "
                     f"{s['swapped_context']:.4f} | {s['latent_ratio']:.2f}× | "
                     f"{s['context_ratio']:.2f}× |")  # fmt: skip
    return "\n".join(lines)


def probe_targets(rows: list[dict]) -> list[dict]:
    """The adaptation issue's targets per probed checkpoint: ``{"target", "measured", "status"}``."""
    out = []
    for row in rows:
        share = {name: r["all"] / max(row["r2_max"][name], 1e-9) for name, r in row["r2"].items()}
        worst = min(share, key=share.get)
        ratio = row["one_step"]["latent_ratio"]
        where = f"{row['env']} ({row['label']})"
        met = "met" if share[worst] >= R2_SHARE else "missed"
        out.append({"target": f"{where}: latent probe R² ≥ {R2_SHARE} × R²_max for every parameter",
                    "measured": f"lowest {share[worst]:.2f} × ({worst})", "status": met})  # fmt: skip
        out.append({"target": f"{where}: a swapped latent ≥ {SWAP_TARGET}× the one-step error",
                    "measured": f"{ratio:.2f}×", "status": "met" if ratio >= SWAP_TARGET else "missed"})  # fmt: skip
    return out


def dyna_loop_lines(runs: list[dict]) -> list[str]:
    """``benchmarks/dyna_loop.py``'s main jobs: wall time by phase, real transitions, final meta-test."""
    lines = ["| config | wall | model | policy | collect | eval | real transitions | GSSM+APS interp | "
             "GSSM+APS extrap | random interp | random extrap |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in runs:
        ph, ours, rand = r["phases"], r["summary"]["gssm_aps"], r["summary"]["random"]
        lines.append(f"| {r['config']} | {r['wall_s']:.0f} s | {ph['model']:.0f} s | {ph['policy']:.0f} s | "
                     f"{ph['collect']:.0f} s | {ph['eval']:.0f} s | {r['transitions']:,.0f} | "
                     f"{ours['interpolation']:.3f} | {ours['extrapolation']:.3f} | {rand['interpolation']:.3f} | "
                     f"{rand['extrapolation']:.3f} |")  # fmt: skip
    return lines


def scaling_lines(rows: list[dict]) -> list[str]:
    """``benchmarks/scaling.py``'s rows: one Dyna iteration's phases and peak memory per row, with the
    per-task cost of the iteration against the 16-task row (≤ 1: at most linear in the tasks)."""
    lines = ["| row | process wall | data set-up | model | policy | collect | iteration (model+policy+collect) "
             "| per-task cost vs 16 tasks (≤ 1: at most linear) | peak memory |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    base = next((r for r in rows if r["row"] == "tasks=16"), None)
    for r in rows:
        ph, ratio = r["phases_s"], ""
        if base is not None and r["row"].startswith("tasks="):
            ratio = f"{per_task_cost(r, base):.2f}"
        lines.append(f"| {r['row']} | {r['wall_s']:.0f} s | {r['setup_s']:.0f} s | {ph['model']:.0f} s | "
                     f"{ph['policy']:.0f} s | {ph['collect']:.0f} s | {r['iteration_s']:.0f} s | {ratio} | "
                     f"{r['peak_rss_gib']:.2f} GiB |")  # fmt: skip
    return lines


def per_task_cost(row: dict, base: dict) -> float:
    """A ``tasks=T`` row's iteration time per task over the 16-task row's (1: exactly linear)."""
    tasks = int(row["row"].split("=")[1]) / int(base["row"].split("=")[1])
    return row["iteration_s"] / base["iteration_s"] / tasks
