"""GSSM vs MLSM-v0 vs MLSM-v1 on identical random-policy data: held-out NLL/MSE, size, speed.

    python benchmarks/model_comparison.py [--envs acrobot cartpole_swingup] [--seeds 0 1 2] [--epochs 30]

Every variant of one env and seed trains on the same data (the datamodule's ``seed``) for the
same number of steps with the settings of ``conf/model/<env>.yaml``; the table gives mean ± std
across seeds of the test-task NLL and MSE (normalised Δs; see ``modules/meta_dynamics_model.py``),
split into interpolation and extrapolation tasks, plus parameter counts and training throughput
(target transitions per second of the optimisation loop).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import pytorch_lightning as pl
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datamodules import TransitionDataModule
from modules import VARIANTS, MetaDynamicsModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Throughput(pl.Callback):
    """Wall time of the training batches only (no validation, no data collection)."""

    def __init__(self):
        self.seconds, self.targets = 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t
        self.targets += batch["target_x"].shape[0] * batch["target_x"].shape[1]


def run(env: str, variant: str, seed: int, epochs: int, workdir: str) -> dict[str, float]:
    with open(os.path.join(ROOT, f"conf/model/{env}.yaml")) as f:
        conf = yaml.safe_load(f)
    pl.seed_everything(seed, verbose=False)
    data = TransitionDataModule(**{**conf["data"]["init_args"], "seed": seed})
    model = MetaDynamicsModel(**{**conf["model"]["init_args"], "env": env, "variant": variant})
    speed = Throughput()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=epochs,
        callbacks=[speed],
        default_root_dir=workdir,
    )
    trainer.fit(model, data)
    scores = trainer.validate(model, data, verbose=False)[0]
    return {
        **{k: float(v) for k, v in scores.items()},
        "params": sum(p.numel() for p in model.parameters()),
        "samples_per_s": speed.targets / speed.seconds,
    }


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["acrobot", "cartpole_swingup"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(
        f"# GSSM vs MLSM, {args.epochs} epochs × conf batches, seeds {args.seeds}; "
        f"{platform.machine()}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}"
    )
    header = "| env | variant | params | NLL interp | NLL extrap | MSE interp | MSE extrap | samples/s |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as workdir:
        for env in args.envs:
            for variant in args.variants:
                runs = [run(env, variant, seed, args.epochs, workdir) for seed in args.seeds]
                cols = [
                    mean_std([r[f"model/val_{split}/{score}"] for r in runs])
                    for score in ("nll", "mse")
                    for split in ("interpolation", "extrapolation")
                ]
                speed = statistics.mean(r["samples_per_s"] for r in runs)
                row = [env, variant, f"{runs[0]['params']:,}", *cols, f"{speed:,.0f}"]
                print(f"| {' | '.join(row)} |", flush=True)


if __name__ == "__main__":
    main()
