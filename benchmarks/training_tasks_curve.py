"""The learning curve of a baseline that collects its own data (M-DPILCO, L2A), meta-tested on its *training* tasks.

    python benchmarks/training_tasks_curve.py --method m_dpilco --env cartpole_swingup [--set horizon=60 ...]
        [--set budget.real_transitions=9600 ...]
        [--tasks 8] [--episodes 10] [--every 9600] [--seed 0] [--out result.json]

The learner trains as ``train.py fit`` would (in-process, no logger or checkpoint), but each meta-test —
every ``--every`` real transitions and at the end — runs DESIGN §6's protocol on its first ``--tasks``
training tasks instead of the test tasks: the number its settings are chosen on, never the test tasks.
Prints one line per iteration (wall time, the training losses, the imagined and real per-step rewards) and
one per meta-test (mean per-step reward over those tasks); ``--out`` writes the meta-tests as a raw
result (:mod:`raw_results`), for the tuning notes' numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from raw_results import add_note_argument, write_result  # noqa: E402
from training_tasks_metatest import parse_setting, settings_of  # noqa: E402

from modules.methods.l2a.learner import L2A  # noqa: E402
from modules.methods.m_dpilco import MDPILCO  # noqa: E402
from train import compose_config, merge_config, quiet_lightning_notes  # noqa: E402

LEARNERS = {"m_dpilco": MDPILCO, "l2a": L2A}


def on_training_tasks(cls: type, tasks: int) -> type:
    """``cls`` whose meta-test runs on its first ``tasks`` training tasks, printing as it goes."""

    class OnTrainingTasks(cls):
        def __init__(self, **settings):
            super().__init__(**settings)
            self.test_tasks = self.train_tasks[:tasks]
            self._clock = time.perf_counter()
            self.curve: list[dict] = []  # the training-task meta-tests, for --out

        def on_train_epoch_end(self) -> None:
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                       if k.startswith(("model/train", "policy/", "real/reward"))}  # fmt: skip
            print(f"iteration {self.iterations}: {self.real_transitions} transitions, "
                  f"{time.perf_counter() - self._clock:.1f} s, "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())), flush=True)  # fmt: skip
            super().on_train_epoch_end()
            if self._latest_metatest:
                reward = self._latest_metatest["metatest/return_mean"] / self.family.episode_length
                print(f"  training-task meta-test at {self.real_transitions}: {reward:.3f} per step", flush=True)
                self.curve.append({"real_transitions": self.real_transitions, "reward_per_step": reward})
                self._latest_metatest = {}
            self._clock = time.perf_counter()

    return OnTrainingTasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(LEARNERS), default="m_dpilco")
    parser.add_argument("--env", default="acrobot")
    parser.add_argument("--set", nargs="*", default=[], type=parse_setting, metavar="NAME=VALUE",
                        help="settings over the config's")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--every", type=int, default=9600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the meta-tests as a raw result here")
    add_note_argument(parser)
    args = parser.parse_args()
    quiet_lightning_notes()
    config = compose_config(ROOT / f"conf/baselines/{args.env}_{args.method}.yaml")["model"].get("init_args", {})
    config = merge_config(config, settings_of(args.set))
    config = merge_config(config, {"env": args.env, "seed": args.seed,
                                   "metatest": {"every_transitions": args.every, "episodes": args.episodes}})
    print(f"{args.method} on {args.env}'s first {args.tasks} training tasks: {config}", flush=True)
    pl.seed_everything(args.seed, verbose=False)
    learner = on_training_tasks(LEARNERS[args.method], args.tasks)(**config)
    print(f"meta-tested on {', '.join(t.name for t in learner.test_tasks)}", flush=True)
    trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(learner)
    print(f"wall {time.perf_counter() - start:.0f} s")
    if args.out:
        tasks = [t.name for t in learner.test_tasks]
        write_result(args.out, {"method": args.method, "env": args.env, "config": config, "tasks": tasks,
                                "curve": learner.curve}, time.perf_counter() - start, args.note)  # fmt: skip


if __name__ == "__main__":
    main()
