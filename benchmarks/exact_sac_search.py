"""Rung a of the gap ladder with SAC as the optimiser: SAC on the exact equations, scored on training tasks.

    python benchmarks/exact_sac_search.py --env acrobot [--steps 12000] [--set updates_per_step=8 sac.gamma=0.995 ...]

Trains :class:`ExactSACSearch` on the physics of 16 i.i.d. training tasks (``train_tasks(16, seed=0,
design="uniform")``, those of the committed results), from start states of their real envs (no Dyna
checkpoint needed), with ``--set`` overriding its settings (a SAC field as ``sac.field``). Every
``--eval-every`` steps, and at the end, scores the mean-action policy on 6 *training* tasks
(``train_tasks(6, seed=1000, design="uniform")``, the tasks ``benchmarks/exact_policy_search.py`` and
``benchmarks/ceiling.py --tasks train`` use), never on the test tasks: per-task reward per step, their
mean, and the wall time so far. On acrobot ``--energy-shaping W`` shapes the stored rewards by the
potential of the ceiling planner's energy gap and ``--energy-cost W`` adds the gap as a cost (the
scores stay the env's reward). Writes ``docs/results/exact_sac_<env>_seed<seed>[_<label>].json``
(``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from ceiling import acrobot_energy_gap  # noqa: E402

from envs import make_family  # noqa: E402
from envs.rollout import agent_policy  # noqa: E402
from evaluation.protocol import evaluation_returns, uniform_random_policy  # noqa: E402
from modules.methods.gssm_aps.exact_policy_search import physics_code  # noqa: E402
from modules.methods.gssm_aps.exact_sac_search import ExactSACSearch, Shaping, start_states  # noqa: E402
from modules.policies.sac import SACSettings  # noqa: E402


def parse_overrides(pairs: list[str]) -> dict:
    """``["updates_per_step=8", "sac.gamma=0.995"]`` → ``{"updates_per_step": 8, "sac": {"gamma": 0.995}}``."""
    overrides: dict = {}
    for kv in pairs:
        name, value = kv.split("=", 1)
        *blocks, leaf = name.split(".")
        target = overrides
        for block in blocks:
            target = target.setdefault(block, {})
        target[leaf] = yaml.safe_load(value)
    return overrides


def energy_shaping(env: str, potential_weight: float, cost_weight: float, sac: dict) -> Shaping | None:
    """Acrobot's reward term from the ceiling planner's energy gap ``g(s) = |E − E_top| / E_top``: the
    potential-based ``γ Φ(s') − Φ(s)`` with ``Φ = −W g`` (no termination to special-case) plus the cost
    ``−W' g(s')``; None without either."""
    if not (potential_weight or cost_weight):
        return None
    if env != "acrobot":
        raise SystemExit("--energy-shaping and --energy-cost are acrobot's")
    gamma = SACSettings.of(sac).gamma

    def shaping(obs: torch.Tensor, next_obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        before, after = (acrobot_energy_gap(o, params).float() for o in (obs, next_obs))
        return potential_weight * (before - gamma * after) - cost_weight * after

    return shaping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="acrobot")
    parser.add_argument("--steps", type=int, default=12000, help="steps of the batch of trajectories")
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--tasks", type=int, default=16, help="training tasks (train_tasks(N, seed=0))")
    parser.add_argument("--episodes", type=int, default=5, help="mean-action episodes per scoring task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="suffix of the JSON's name")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results")
    # fmt: off
    parser.add_argument("--energy-shaping", type=float, default=0.0, metavar="W",
                        help="acrobot: shape by the potential Φ = −W·|E − E_top|/E_top (the ceiling's energy gap)")
    parser.add_argument("--energy-cost", type=float, default=0.0, metavar="W",
                        help="acrobot: add −W·|E' − E_top|/E_top to each reward (changes the objective)")
    # fmt: on
    parser.add_argument("--save", type=Path, help="also save the learner's weights (actor, critics, temperature) there")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: one thread, and other runs share the cores
    family = make_family(args.env)
    train = family.train_tasks(args.tasks, seed=0, design="uniform")  # the tasks of the committed results
    overrides = parse_overrides(args.set)
    shaping = energy_shaping(family.name, args.energy_shaping, args.energy_cost, overrides.get("sac", {}))
    t0 = time.perf_counter()
    search = ExactSACSearch(family, family.params_tensor(train), start_states(family, train, 256, args.seed),
                            seed=args.seed, shaping=shaping, **overrides)  # fmt: skip
    tasks = family.train_tasks(6, seed=1000, design="uniform")  # whatever the seed: seeds compare on the same tasks
    code = physics_code(family, family.params_tensor(tasks)).repeat_interleave(args.episodes, 0)

    def score(policy) -> np.ndarray:
        return evaluation_returns(family, tasks, args.episodes, args.seed + 1, policy).mean(1) / family.episode_length

    random = score(uniform_random_policy(family.act_dim, args.seed + 1))
    curve = []
    while search.steps < args.steps:
        train_stats = search.train(min(args.eval_every, args.steps - search.steps))
        search.policy.eval()
        per_step = score(agent_policy(search.policy, code, deterministic=True))
        wall = time.perf_counter() - t0
        curve.append({"steps": search.steps, "updates": search.learner.updates, "mean": float(per_step.mean()),
                      "per_task": per_step.tolist(), "wall_s": wall, "train": train_stats})  # fmt: skip
        print(f"{family.name} step {search.steps} ({search.learner.updates} updates, {wall:.0f} s): "
              + " ".join(f"{x:.3f}" for x in per_step) + f" mean {per_step.mean():.3f} | train "
              + " ".join(f"{k} {v:.3g}" for k, v in train_stats.items()), flush=True)  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {
        "method": "sac_exact_dynamics", "env": family.name, "seed": args.seed, "steps": args.steps,
        "settings": {**search.hparams, "sac": asdict(search.learner.settings)},
        "energy_shaping": args.energy_shaping, "energy_cost": args.energy_cost,
        "scoring_tasks": "train_tasks(6, seed=1000, design='uniform')", "episodes": args.episodes,
        "per_task": {t.name: {"params": t.parameters, "sac": curve[-1]["per_task"][i], "random": float(random[i])}
                     for i, t in enumerate(tasks)},
        "mean": curve[-1]["mean"], "random_mean": float(random.mean()), "curve": curve,
        "wall_s": time.perf_counter() - t0, "commit": commit.stdout.strip(), "command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread, {os.cpu_count()} cores",
    }  # fmt: skip
    if args.save:
        torch.save(search.learner.state_dict(), args.save)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"exact_sac_{family.name}_seed{args.seed}{'_' + args.label if args.label else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"mean {result['mean']:.3f} (random {result['random_mean']:.3f}), {result['wall_s']:.0f} s -> {name}")


if __name__ == "__main__":
    main()
