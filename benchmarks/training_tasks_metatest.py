"""The meta-test protocol on a checkpoint's own *training* tasks: the number to tune on.

    python benchmarks/training_tasks_metatest.py --ckpt runs/acrobot/version_0/checkpoints/last.ckpt [--ckpt ...]
        [--context 50] [--episodes 50] [--seed 123] [--tasks N]
        [--method gssm_aps|gssm_nonamortized|gssm_mpc] [--set mpc.horizon=40 ...] [--out result.json]

DESIGN §6's protocol — ``--context`` online steps with the stochastic policy while ``z_c`` is
re-inferred as the context grows, then ``--episodes`` mean-action episodes per task with ``z_c``
from that context, no gradient step — run on the training tasks the checkpoint was meta-trained on
(its datamodule's ``num_train_tasks`` and ``task_seed``; the first ``--tasks`` of them), never on the
test tasks. Budgets and schedules are chosen on this number: the Dyna loop's ``real/reward_per_step``
is collected by the exploring policy (action std ≥ its floor) and stayed flat on acrobot while the
mean-action policy still improved (docs/TUNING.md, *What was tried*). With ``--method`` a test-time method
(:class:`modules.GSSMTestTimeMethod`, its settings changed by ``--set name=value``, a block's field
as ``block.field=value``) runs
the same protocol on the checkpoint's GSSM: how its planning and search settings were chosen.
``--out`` writes the rows as a raw result (:mod:`raw_results`), for the tuning notes' numbers.
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
from latent_probe import run_label  # noqa: E402
from raw_results import add_note_argument, write_result  # noqa: E402

from evaluation.protocol import run_meta_test  # noqa: E402
from modules.methods.gssm_aps.dyna_checkpoint import load_dyna_checkpoint  # noqa: E402
from modules.methods.gssm_test_time.test_time_method import GSSMTestTimeMethod  # noqa: E402
from train import merge_config  # noqa: E402


def training_tasks_reward(path: str, context: int, episodes: int, seed: int, method: str = "gssm_aps",
                          tasks: int | None = None, settings: dict | None = None, unseen: int = 0) -> dict:  # fmt: skip
    """Mean per-step reward of ``method`` on the checkpoint's (first ``tasks``) training tasks under the
    meta-test protocol, with each task's value and, for a test-time method, its compute. With
    ``unseen``, on that many other tasks of the training ranges instead (``train_tasks(unseen,
    seed=1000)``, the ceiling's tuning tasks): runs with different training tasks compare there."""
    run = load_dyna_checkpoint(path)
    family = run.family
    train_tasks = family.train_tasks(run.data["num_train_tasks"], run.data["task_seed"], run.data["task_design"])
    train_tasks = train_tasks[:tasks]
    if unseen:
        train_tasks = family.train_tasks(unseen, seed=1000, design="uniform")  # random tasks, as users meet them
    compute = {}
    if method == "gssm_aps":  # the amortized policy of the run's model: GSSM, or an MLSM ablation
        method = f"{run.model.hparams.variant}_aps"
        infer = lambda cx, cy, mask: run.model.infer_context(cx, cy, mask).q_zc  # noqa: E731
        with torch.no_grad():
            results, _ = run_meta_test(family, train_tasks, method, run.aps.policy, episodes, seed, infer,
                                       n_context=context)  # fmt: skip
    else:
        given = merge_config({"metatest": {"context": context, "episodes": episodes}}, settings or {})
        module = GSSMTestTimeMethod(env=family.name, method=method, checkpoint=path, seed=seed, **given)
        module.setup("test")
        results = module.run_protocol(train_tasks)
        compute = module.test_compute()
    per_task = {r.task: r.reward_per_step for r in results if r.method == method}
    return {"env": family.name, "tasks": len(train_tasks), "reward_per_step": sum(per_task.values()) / len(per_task),
            "per_task": per_task, "compute": compute}  # fmt: skip


def parse_setting(text: str) -> dict:
    """``name=value`` as ``{name: value}``, ``block.field=value`` as ``{block: {field: value}}``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected name=value, e.g. mpc.horizon=40")
    setting = yaml.safe_load(value)
    for key in reversed(name.split(".")):
        setting = {key: setting}
    return setting


def settings_of(parsed: list[dict]) -> dict:
    """The ``--set`` settings merged into one nested dict."""
    merged: dict = {}
    for setting in parsed:
        merged = merge_config(merged, setting)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", action="extend", required=True, help="Dyna checkpoints")
    parser.add_argument("--context", type=int, default=50, help="online context steps per task")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--tasks", type=int, default=None, help="only the first N training tasks (default: all)")
    parser.add_argument("--unseen", type=int, default=0,
                        help="N other tasks of the training ranges, not the run's (never test tasks)")  # fmt: skip
    parser.add_argument("--method", default="gssm_aps", choices=["gssm_aps", "gssm_nonamortized", "gssm_mpc"])
    parser.add_argument("--set", type=parse_setting, nargs="*", default=[], dest="settings",
                        help="a test-time method's setting, name=value (GSSMTestTimeMethod's arguments)")
    parser.add_argument("--out", type=Path, help="also write the rows as a raw result here")
    add_note_argument(parser)
    args = parser.parse_args()
    settings = settings_of(args.settings)
    start, rows = time.perf_counter(), []
    print(f"{args.method} {settings}")
    print("| checkpoint | env | training tasks | mean per-step reward | test-time compute |\n|---|---|---:|---:|---|")
    for path in args.ckpt:
        r = training_tasks_reward(path, args.context, args.episodes, args.seed, args.method, args.tasks, settings,
                                  args.unseen)
        rows.append({"checkpoint": path, **r})
        compute = ", ".join(f"{k} {v:.4f}" for k, v in r["compute"].items()) or "—"
        print(f"| {run_label(path)} ({path}) | {r['env']} | {r['tasks']} | {r['reward_per_step']:.3f} | {compute} |",
              flush=True)
    if args.out:
        protocol = {k: getattr(args, k) for k in ("context", "episodes", "seed", "tasks", "unseen", "method")}
        write_result(args.out, {"protocol": protocol, "settings": settings, "rows": rows},
                     time.perf_counter() - start, args.note)  # fmt: skip


if __name__ == "__main__":
    main()
