"""The meta-test protocol on a checkpoint's own *training* tasks: the number to tune on.

    python benchmarks/training_tasks_metatest.py --ckpt runs/acrobot/version_0/checkpoints/last.ckpt [--ckpt ...]
        [--context 50] [--episodes 50] [--seed 123]

DESIGN §6's protocol — ``--context`` online steps with the stochastic policy while ``z_c`` is
re-inferred as the context grows, then ``--episodes`` mean-action episodes per task with ``z_c``
from that context, no gradient step — run on the training tasks the checkpoint was meta-trained on
(its datamodule's ``num_train_tasks`` and ``task_seed``), never on the test tasks. Budgets and
schedules are chosen on this number: the Dyna loop's ``real/reward_per_step`` is collected by the
exploring policy (action std ≥ its floor) and stayed flat on acrobot while the mean-action policy
still improved (README, *What was tried*).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from latent_probe import run_label  # noqa: E402

from evaluation.protocol import run_meta_test  # noqa: E402
from modules.dyna_checkpoint import load_dyna_checkpoint  # noqa: E402


def training_tasks_reward(path: str, context: int, episodes: int, seed: int) -> dict:
    """Mean per-step reward of the checkpoint's policy over its training tasks under the meta-test
    protocol, with each task's value."""
    run = load_dyna_checkpoint(path)
    model, policy, family = run.model, run.aps.policy, run.family
    tasks = family.train_tasks(run.data["num_train_tasks"], run.data["task_seed"])
    infer = lambda cx, cy, mask: model.infer_context(cx, cy, mask).q_zc  # noqa: E731
    with torch.no_grad():
        results, _ = run_meta_test(family, tasks, "gssm_aps", policy, episodes, seed, infer, n_context=context)
    per_task = {r.task: r.reward_per_step for r in results if r.method == "gssm_aps"}
    return {"env": family.name, "tasks": len(tasks), "reward_per_step": sum(per_task.values()) / len(per_task),
            "per_task": per_task}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", action="extend", required=True, help="Dyna checkpoints")
    parser.add_argument("--context", type=int, default=50, help="online context steps per task")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    print("| checkpoint | env | training tasks | mean per-step reward |\n|---|---|---:|---:|")
    for path in args.ckpt:
        r = training_tasks_reward(path, args.context, args.episodes, args.seed)
        print(f"| {run_label(path)} ({path}) | {r['env']} | {r['tasks']} | {r['reward_per_step']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
