"""Tune the gap ladder's rung a on training tasks: APS's PPO on the exact equations, with settings changed.

    python benchmarks/exact_policy_search.py CKPT [--iterations N] [--set horizon=100 ppo.lr=0.0003 ...]

Trains :class:`ExactDynamicsSearch` as ``benchmarks/gap_ladder.py`` does (the checkpoint's policy and
PPO settings and buffer start states, its number of PPO iterations unless ``--iterations``), with
``--set`` overriding APS settings (a PPO field as ``ppo.field``), and scores the mean-action policy
on 6 *training* tasks (``train_tasks(6, seed=1000)``, the tasks ``benchmarks/ceiling.py --tasks
train`` plans on), never on the test tasks. Prints the per-step reward per task and the mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gap_ladder import train_exact_search  # noqa: E402

from envs.rollout import agent_policy  # noqa: E402
from evaluation.protocol import evaluation_returns  # noqa: E402
from modules.methods.gssm_aps.aps import APSModule  # noqa: E402
from modules.methods.gssm_aps.dyna_checkpoint import load_dyna_checkpoint  # noqa: E402
from modules.methods.gssm_aps.exact_policy_search import physics_code  # noqa: E402
from train import merge_config, quiet_lightning_notes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--iterations", type=int, help="PPO iterations (default: the run's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_lightning_notes()
    torch.set_num_threads(1)
    run = load_dyna_checkpoint(args.checkpoint)
    family = run.family
    source = APSModule.source_from_checkpoint(args.checkpoint, family.name)
    loop = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["callbacks"]["DynaLoop"]
    overrides: dict = {}
    for kv in args.set:
        name, value = kv.split("=", 1)
        *blocks, leaf = name.split(".")
        target = overrides
        for block in blocks:
            target = target.setdefault(block, {})
        target[leaf] = yaml.safe_load(value)
    hparams = merge_config(dict(run.aps.hparams), overrides)
    iterations = args.iterations or int(loop["aps_iterations"])
    t0 = time.perf_counter()
    search = train_exact_search(family, source.params, source.buffer.obs[:, : int(source.buffer.size.min())],
                                hparams, iterations, args.seed)  # fmt: skip
    tasks = family.train_tasks(6, seed=1000 + args.seed, design="uniform")  # random tasks, as users meet them
    code = physics_code(family, family.params_tensor(tasks)).repeat_interleave(args.episodes, 0)
    returns = evaluation_returns(family, tasks, args.episodes, args.seed + 1,
                                 agent_policy(search.policy, code, deterministic=True))  # fmt: skip
    per_step = returns.mean(1) / family.episode_length
    print(f"{family.name} {' '.join(args.set) or 'as the run'} ({iterations} iterations, "
          f"{time.perf_counter() - t0:.0f} s): " + " ".join(f"{x:.3f}" for x in per_step)
          + f" mean {per_step.mean():.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
